namespace SaeSharp.Bench;

/// <summary>Every bench sub-command with the options it takes: <c>Values</c> take a value (<c>--steps 3</c>), <c>Flags</c>
/// stand alone (<c>--autocast</c>). Each bench parses its arguments against its row (<see cref="BenchArgs.For"/>), and
/// BenchCommandLineTests parses every bench command line recorded in BENCHMARKS.md and docs/*.md against the same rows,
/// so a renamed option cannot leave a recorded figure without a command that runs. This file depends on nothing but the
/// base library: the tests compile it in.</summary>
internal static class BenchCommands
{
    public static readonly IReadOnlyDictionary<string, (string[] Values, string[] Flags)> Options =
        new Dictionary<string, (string[] Values, string[] Flags)>(StringComparer.Ordinal)
        {
            ["train"] = (["--steps", "--d-in", "--d-sae", "--batch", "--k", "--arch", "--candidate-pass", "--peer"], ["--profile", "--autocast"]),
            ["harvest"] = ([], []),
            ["features"] = (["--batches"], []),
            ["accuracy"] = (["--steps", "--d-in", "--d-sae", "--features", "--batch", "--k", "--rows", "--arch"], []),
            ["recipes"] = (["--activations", "--eval", "--arch", "--tokens", "--batch", "--d-sae", "--k", "--eval-rows", "--target-l0",
                "--model", "--dataset", "--hook", "--eval-tokens"], []),
            ["topk-paths"] = (["--repeats", "--rows", "--d-in", "--d-sae", "--k", "--chunk", "--threads"], ["--select-only"]),
            ["int8-products"] = (["--rounds", "--rows", "--d-in", "--d-sae"], []),
            ["relu-run"] = (["--steps", "--d-in", "--d-sae", "--batch", "--l1", "--lr", "--switch", "--report", "--activations", "--eval",
                "--write", "--from", "--rows", "--eval-rows", "--features", "--max-frequency", "--arch", "--seed", "--k", "--auxk-coefficient",
                "--candidate-pass", "--densities"], ["--autocast", "--crossover"]),
            ["downstream"] = (["--windows", "--ctx", "--batch", "--repeats", "--d-model"], ["--profile"]),
            ["gemm"] = (["--d-in", "--d-sae", "--batch", "--rounds"], []),
            ["fork-join"] = (["--calls", "--gaps"], []),
            ["sparse"] = (["--d-in", "--d-sae", "--batch", "--densities", "--repeats"], []),
            ["probe-fit"] = (["--n", "--d", "--density"], ["--gram"]),
            ["probe"] = (["--n", "--d", "--density"], ["--dense"]),
            ["score-labels"] = (["--tokens", "--d-sae", "--k"], ["--dense"]),
            ["fit-l1"] = (["--n", "--d", "--density"], []),
            ["lm-memory"] = (["--shapes", "--steps", "--one", "--corpus", "--validation"], []),
            ["tensor-lifetime"] = (["--mode", "--seconds", "--n"], []),
            ["machine"] = ([], []),
        };
}
