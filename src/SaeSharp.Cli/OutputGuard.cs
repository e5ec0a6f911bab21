using SaeSharp.Interop;

namespace SaeSharp.Cli;

/// <summary>How a command reads one of its input paths, for <see cref="OutputGuard"/>.</summary>
internal enum InputKind
{
    /// <summary>A file, or a folder every file of which is part of the input (activation shards, a text dataset):
    /// nothing may be written inside it (a new file there would be read as part of it next time).</summary>
    Whole,
    /// <summary>An SAE folder or file: the files an SAE loader reads there may not be replaced; other files beside them
    /// (metrics.json, an encoding) may.</summary>
    Sae,
    /// <summary>A folder whose existing files the command reads (a model), or only the files
    /// <see cref="CommandInput.Files"/> when given (a <c>sae features</c> folder): they may not be replaced; a new file
    /// beside them may be written.</summary>
    Folder,
}

/// <summary>One input path of a command, named by its flag for the error message; <paramref name="Files"/>: for a
/// <see cref="InputKind.Folder"/>, the only files in it that are read.</summary>
internal readonly record struct CommandInput(string Flag, string Path, InputKind Kind, IReadOnlyList<string>? Files = null);

/// <summary>Refuses, before a command runs, an output path that would replace one of the command's own inputs.</summary>
internal static class OutputGuard
{
    /// <summary>The files an SAE (or a crosscoder) at <paramref name="path"/> (folder or file) is read from, by any supported format.</summary>
    private static IEnumerable<string> SaeFiles(string path)
    {
        string dir = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (!Directory.Exists(path)) yield return path;
        foreach (var name in SaeLoader.FileNames.Concat([CrossCoderFormat.WeightsFile, CrossCoderFormat.ConfigFile]))
            yield return Path.Combine(dir, name);
    }

    /// <summary>Throws when <paramref name="output"/> (given as <paramref name="flag"/>), or one of the files
    /// <paramref name="written"/> into it when it is a folder, is or would replace one of <paramref name="inputs"/>, and,
    /// for a folder (<paramref name="written"/> given, perhaps empty), when it is an existing file.
    /// Inputs that are not local paths (a release or <c>hf:</c> name) are skipped.</summary>
    public static void RefuseReplacingInput(string flag, string output, IEnumerable<string>? written, params CommandInput[] inputs)
    {
        RefuseFileAsFolder(flag, output);
        var paths = new[] { output }.Concat((written ?? []).Select(f => Path.Combine(output, f))).Select(Full).ToList();
        foreach (var (inFlag, input, kind, files) in inputs)
        {
            if (!File.Exists(input) && !Directory.Exists(input)) continue;
            string inFull = Full(input);
            bool folder = Directory.Exists(input);
            var named = (kind == InputKind.Sae ? SaeFiles(input) : files?.Select(f => Path.Combine(input, f)))?.Select(Full).ToHashSet(StringComparer.Ordinal);
            foreach (var o in paths)
            {
                bool inside = folder && o.StartsWith(inFull + Path.DirectorySeparatorChar, StringComparison.Ordinal);
                bool clash = o == inFull || kind switch
                {
                    InputKind.Whole => inside,
                    _ when named is not null => named.Contains(o),
                    _ => inside && File.Exists(o),
                };
                if (!clash) continue;
                string inDir = folder ? inFull : Path.GetDirectoryName(inFull)!;
                string what = o == inFull ? $"replace {inFlag} {input}"
                    : kind == InputKind.Whole ? $"write into the folder of {inFlag} {input}"
                    : $"replace {Path.GetRelativePath(inDir, o)} of {inFlag} {input}";
                string part = o == paths[0] ? "" : $" (its {Path.GetRelativePath(paths[0], o)})";
                throw new SaeSharpException($"{flag} {output}{part}: would {what}, which this command reads; give another {(written is null ? "file" : "folder")}");
            }
        }
        if (written is not null && File.Exists(output))
            throw new SaeSharpException($"{flag} {output}: is a file, not a folder; give a folder path (this command writes several files)");
    }

    /// <summary><see cref="RefuseReplacingInput(string, string, IEnumerable{string}?, CommandInput[])"/> for an output file.</summary>
    public static void RefuseReplacingInput(string flag, string output, params CommandInput[] inputs) =>
        RefuseReplacingInput(flag, output, null, inputs);

    /// <summary>Before a command runs, for an output file: throws when <paramref name="output"/> is an existing folder, when
    /// a folder on its path is an existing file, or when it would replace one of <paramref name="inputs"/>
    /// (<see cref="RefuseReplacingInput(string, string, IEnumerable{string}?, CommandInput[])"/>), so that the mistake
    /// is found before the work, not when its result is written.</summary>
    public static void RefuseBadOutputFile(string flag, string output, params CommandInput[] inputs) =>
        RefuseBadOutputFile(flag, output, "out" + FileExtension(flag), inputs);

    /// <summary><see cref="RefuseBadOutputFile(string, string, CommandInput[])"/>, its error for a folder suggesting the file
    /// <paramref name="exampleName"/> in it (for an option whose file type the flag does not tell, e.g. a graph's <c>--out</c>).</summary>
    public static void RefuseBadOutputFile(string flag, string output, string exampleName, params CommandInput[] inputs)
    {
        RefuseFolderPath(flag, output, exampleName);
        RefuseReplacingInput(flag, output, null, inputs);
        if (ArtefactOf(output) is { } artefact)
            throw new SaeSharpException($"{flag} {output}: is one of the files of {artefact}, which this command does not write; give another file");
    }

    /// <summary>Throws when the output file <paramref name="output"/> is an existing folder or ends in a separator (a folder
    /// path, new or not: writing a file there failed only after the work), suggesting the file <paramref name="exampleName"/> in it.</summary>
    public static void RefuseFolderPath(string flag, string output, string exampleName)
    {
        if (Directory.Exists(output))
            throw new SaeSharpException($"{flag} {output}: is a folder; give a file path (e.g. {Path.Combine(output, exampleName)})");
        if (Path.EndsInDirectorySeparator(output))
            throw new SaeSharpException($"{flag} {output}: ends in '{output[^1]}', a folder path; give a file path (e.g. {Path.Combine(output, exampleName)})");
    }

    /// <summary>"the SAE in DIR", "the crosscoder in DIR" or "the model in DIR" when <paramref name="output"/> is an
    /// existing file such a folder is read from, else null: an output of another kind written over it (a
    /// <c>sae model run --out</c> onto <c>sae_weights.safetensors</c>) destroyed the SAE, input of the command or not.</summary>
    private static string? ArtefactOf(string output)
    {
        if (!File.Exists(output)) return null;
        string full = Path.GetFullPath(output), dir = Path.GetDirectoryName(full)!, name = Path.GetFileName(full);
        if (SaeLoader.FileNames.Contains(name) && SaeLoader.FileNames.Any(other => other != name && File.Exists(Path.Combine(dir, other))))
            return $"the SAE in {dir}";
        bool weightsOrTokenizer = name is "tokenizer.json" or "tokenizer_config.json" or "generation_config.json"
                                  || name.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".bin", StringComparison.OrdinalIgnoreCase);
        if (!weightsOrTokenizer || !File.Exists(Path.Combine(dir, "config.json"))) return null;
        return CrossCoderFormat.IsCrossCoderPath(dir) ? $"the crosscoder in {dir}" : $"the model in {dir}";
    }

    /// <summary><see cref="RefuseBadOutputFile"/> for each of a command's output files given (a null path: not given), and
    /// no two of them the same file.</summary>
    public static void RefuseBadOutputFiles(IEnumerable<(string Flag, string? Path)> outputs, params CommandInput[] inputs)
    {
        var given = outputs.Where(o => o.Path is not null).Select(o => (o.Flag, Path: o.Path!)).ToList();
        foreach (var (flag, path) in given) RefuseBadOutputFile(flag, path, inputs);
        for (int a = 0; a < given.Count; a++)
            for (int b = a + 1; b < given.Count; b++)
                if (Full(given[a].Path) == Full(given[b].Path))
                    throw new SaeSharpException($"{given[b].Flag} {given[b].Path}: the same file as {given[a].Flag}; give two files");
    }

    private static string FileExtension(string flag) => flag switch
    {
        "--json" or "--saebench-json" => ".json",
        "--html" => ".html",
        "--csv" => ".csv",
        "--histogram" or "--l0-histogram" or "--png" or "--eigen-png" => ".png",
        _ => ".safetensors",
    };

    /// <summary>Throws when a folder on the path of <paramref name="output"/> (the output itself excluded) is an existing
    /// file: the folder could not be created.</summary>
    private static void RefuseFileAsFolder(string flag, string output)
    {
        for (var dir = Path.GetDirectoryName(Path.GetFullPath(output)); !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
        {
            if (File.Exists(dir))
                throw new SaeSharpException($"{flag} {output}: {dir} is a file, not a folder; give a path in a folder");
            if (Directory.Exists(dir)) return;
        }
    }

    private static string Full(string path) => Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
}
