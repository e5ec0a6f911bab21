using System.Text.Json.Nodes;
using SaeSharp.Synthetic;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Synthetic;

public class LinearSumAssignmentTests
{
    /// <summary>The minimum total over every injective matching of the smaller side into the larger.</summary>
    private static double BruteForce(double[,] c)
    {
        int n = c.GetLength(0), m = c.GetLength(1);
        bool t = n > m;
        int small = t ? m : n, large = t ? n : m;
        double best = double.PositiveInfinity;
        var used = new bool[large];
        void Rec(int i, double sum)
        {
            if (i == small) { best = Math.Min(best, sum); return; }
            for (int j = 0; j < large; j++)
            {
                if (used[j]) continue;
                used[j] = true;
                Rec(i + 1, sum + (t ? c[j, i] : c[i, j]));
                used[j] = false;
            }
        }
        Rec(0, 0);
        return best;
    }

    private static double Total(double[,] c, int[] rows, int[] cols) => rows.Select((r, k) => c[r, cols[k]]).Sum();

    private static void AssertValid(double[,] c, int[] rows, int[] cols)
    {
        int n = c.GetLength(0), m = c.GetLength(1);
        Assert.Equal(Math.Min(n, m), rows.Length);
        Assert.Equal(rows.Length, cols.Length);
        Assert.Equal(rows.Order(), rows);                 // sorted by row, as SciPy returns them
        Assert.Equal(rows.Length, rows.Distinct().Count());
        Assert.Equal(cols.Length, cols.Distinct().Count());
        Assert.All(rows, r => Assert.InRange(r, 0, n - 1));
        Assert.All(cols, j => Assert.InRange(j, 0, m - 1));
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 3)]
    [InlineData(5, 5)]
    [InlineData(6, 6)]
    [InlineData(2, 5)]
    [InlineData(5, 2)]
    [InlineData(4, 7)]
    [InlineData(7, 4)]
    public void MatchesBruteForceOnRandomMatrices(int n, int m)
    {
        var rng = new Random(n * 31 + m);
        for (int trial = 0; trial < 40; trial++)
        {
            var c = new double[n, m];
            // Half the trials draw from a few values, so ties are common.
            for (int i = 0; i < n; i++)
                for (int j = 0; j < m; j++) c[i, j] = trial % 2 == 0 ? rng.NextDouble() * 10 - 3 : rng.Next(3);
            var (rows, cols) = LinearSumAssignment.Solve(c);
            AssertValid(c, rows, cols);
            Assert.Equal(BruteForce(c), Total(c, rows, cols), 9);

            var neg = new double[n, m];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < m; j++) neg[i, j] = -c[i, j];
            var (mr, mc) = LinearSumAssignment.Solve(c, maximize: true);
            AssertValid(c, mr, mc);
            Assert.Equal(-BruteForce(neg), Total(c, mr, mc), 9);
        }
    }

    [Fact]
    public void AllEqualCostsAndEmptyMatrices()
    {
        var (rows, cols) = LinearSumAssignment.Solve(new double[3, 4]);
        Assert.Equal([0, 1, 2], rows);
        Assert.Equal(3, cols.Distinct().Count());
        Assert.Empty(LinearSumAssignment.Solve(new double[0, 4]).Rows);
        Assert.Empty(LinearSumAssignment.Solve(new double[2, 0]).Cols);
    }

    [Fact]
    public void NaNOrMinusInfinityIsAnError()
    {
        Assert.Throws<SaeSharpException>(() => LinearSumAssignment.Solve(new[,] { { 1.0, double.NaN } }));
        Assert.Throws<SaeSharpException>(() => LinearSumAssignment.Solve(new[,] { { 1.0, double.NegativeInfinity } }));
    }

    [Fact]
    public void AgreesWithSciPyOnTheReferenceMatrix()
    {
        // tests/data/synthetic_evals/reference.json: SciPy 1.10.1's linear_sum_assignment on a 5×8 matrix with ties and on
        // its transpose (bench/reference/synthetic_evals_fixture.py).
        var a = JsonNode.Parse(File.ReadAllText(TestPaths.Data("synthetic_evals", "reference.json")))!["assignment"]!;
        var rowsJ = a["cost"]!.AsArray();
        int n = rowsJ.Count, m = rowsJ[0]!.AsArray().Count;
        var c = new double[n, m];
        var ct = new double[m, n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++) ct[j, i] = c[i, j] = rowsJ[i]![j]!.GetValue<double>();
        var (rows, cols) = LinearSumAssignment.Solve(c);
        Assert.Equal(a["total"]!.GetValue<double>(), Total(c, rows, cols), 9);
        // The same algorithm as SciPy's, so even among tied optima it picks the same pairs.
        Assert.Equal(a["rows"]!.AsArray().Select(v => v!.GetValue<int>()), rows);
        Assert.Equal(a["cols"]!.AsArray().Select(v => v!.GetValue<int>()), cols);
        var (rt, colsT) = LinearSumAssignment.Solve(ct);
        Assert.Equal(a["total_t"]!.GetValue<double>(), Total(ct, rt, colsT), 9);
        Assert.Equal(a["rows_t"]!.AsArray().Select(v => v!.GetValue<int>()), rt);
        Assert.Equal(a["cols_t"]!.AsArray().Select(v => v!.GetValue<int>()), colsT);
    }
}
