#!/usr/bin/env bash
# Uses SaeSharp as a user's own project would (README "The library"): a fresh console project in a temporary folder,
# a ProjectReference to src/SaeSharp/SaeSharp.csproj, warnings as errors, then a program that loads the built-in model
# from its own bin folder, trains a TopK SAE on a model run, saves it in SAELens layout, reloads it and splices it in at
# the hook its cfg.json records. Prints "outside project: ok" at the end; any failure exits non-zero.
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
bash "$root/scripts/setup-native.sh"
work="$(mktemp -d "${TMPDIR:-/tmp}/saesharp-outside-XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
dotnet new console -o app --framework net10.0 >/dev/null
cd app
dotnet add reference "$root/src/SaeSharp/SaeSharp.csproj" >/dev/null
sed -i 's#<Nullable>enable</Nullable>#<Nullable>enable</Nullable><TreatWarningsAsErrors>true</TreatWarningsAsErrors><TieredCompilationQuickJitForLoops>false</TieredCompilationQuickJitForLoops>#' app.csproj
cat > Program.cs <<'CS'
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.LanguageModels;
using SaeSharp.Pipelines;
using SaeSharp.Training;

string text = Path.Combine(Path.GetTempPath(), $"outside-{Environment.ProcessId}.txt");
File.WriteAllLines(text, Enumerable.Range(0, 200).Select(i => $"Mia had a brown dog called Rex . Tom had {i % 7} cats ."));
var data = new ModelDataOptions { ModelPath = BuiltinModel.Folder, DatasetPath = text, ContextSize = 32, Tokens = 4096 };
string saved = Path.Combine(Path.GetTempPath(), $"outside-sae-{Environment.ProcessId}");
using (var source = ModelPipeline.OpenSource(data, BuiltinModel.MiddleHook))
{
    var sae = SaeRecipes.Create("topk", dIn: source.DIn, dSae: 256, k: 8);
    using var trainer = new SaeTrainer(new TrainerConfig { TotalTrainingSteps = 10, TrainBatchSizeTokens = 128 }, source, [new SaeSlot("topk", sae)]);
    using var result = trainer.Run();
    SaeLensFormat.Save(result.Saes[0].Sae, saved);
}
using var loaded = SaeLoader.Load(saved);
using var model = BuiltinModel.Load();
var hooked = new HookedSaeTransformer(model);
var attached = hooked.AddSae(loaded, useErrorTerm: true);
using var tokens = model.ToTokens("Mia had a brown dog");
using var logits = hooked.RunWithHooks(tokens, [new Steering(loaded, feature: 0, scale: 5.0)]);
if (attached.Hook != BuiltinModel.MiddleHook || logits.shape[^1] != model.Config.DVocab) throw new InvalidOperationException("unexpected result");
Directory.Delete(saved, true);
File.Delete(text);
Console.WriteLine($"outside project: ok (hook {attached.Hook}, logits [{string.Join(", ", logits.shape)}])");
CS
dotnet build -c Release -nologo -v q 2>&1 | tail -3
test -f bin/Release/net10.0/SaeSharp.xml || { echo "SaeSharp.xml (IntelliSense docs) missing from the user's bin folder" >&2; exit 1; }
test -f bin/Release/net10.0/models/builtin/config.json || { echo "models/builtin missing from the user's bin folder" >&2; exit 1; }
dotnet bin/Release/net10.0/app.dll
