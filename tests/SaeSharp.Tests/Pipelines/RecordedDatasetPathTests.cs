using SaeSharp.Data;
using SaeSharp.Pipelines;
using SaeSharp.Saes;

namespace SaeSharp.Tests.Pipelines;

/// <summary>cfg.json's dataset_path as <c>sae train --dataset</c> records it and as <c>sae eval --model</c> / <c>sae features</c>
/// read it back without <c>--dataset</c>, from a folder other than the training run's.</summary>
public class RecordedDatasetPathTests : TempDirTestBase
{
    [Fact]
    public void A_local_dataset_is_recorded_absolute_and_a_hub_id_as_it_is()
    {
        string file = Path.Combine(_dir, "stories.txt");
        File.WriteAllText(file, "Once there was a cat.\n");
        string relative = Path.GetRelativePath(Environment.CurrentDirectory, file);
        Assert.False(Path.IsPathRooted(relative));
        Assert.Equal(Path.GetFullPath(file), HubDataset.RecordedPath(relative));
        Assert.Equal("NeelNanda/pile-10k", HubDataset.RecordedPath("hf:NeelNanda/pile-10k"));
    }

    [Fact]
    public void An_old_relative_path_not_found_from_here_is_tried_beside_the_sae_folders()
    {
        // As an older SaeSharp recorded it: the training run's cwd was _dir, the SAE went to _dir/runs/l1.
        string name = $"stories-{Guid.NewGuid():N}.txt";
        string dataset = Path.Combine(_dir, name);
        File.WriteAllText(dataset, "Once there was a cat.\n");
        string sae = Path.Combine(_dir, "runs", "l1");
        Directory.CreateDirectory(sae);
        Assert.False(File.Exists(name));   // not in the current folder
        Assert.Equal(dataset, ModelDataOptions.RecordedDataset(new SaeMetadata { DatasetPath = name }, sae));

        // Found nowhere: the error names the current folder's path and every folder tried beside the SAE.
        string gone = $"gone-{Guid.NewGuid():N}.txt";
        var e = Assert.Throws<SaeSharpException>(() => ModelDataOptions.RecordedDataset(new SaeMetadata { DatasetPath = gone }, sae));
        Assert.Contains(Path.Combine(Environment.CurrentDirectory, gone), e.Message);
        Assert.Contains(Path.Combine(sae, gone), e.Message);
        Assert.Contains(Path.Combine(_dir, gone), e.Message);
        Assert.Contains("give --dataset", e.Message);
    }
}
