namespace SaeSharp.Synthetic;

/// <summary>
/// The linear sum assignment problem (the "Hungarian algorithm"), as SciPy's
/// <c>scipy.optimize.linear_sum_assignment</c> solves it: the shortest augmenting path method of Jonker and Volgenant in
/// Crouse's formulation ("On implementing 2D rectangular assignment algorithms", IEEE TAES 2016), which is what SciPy's
/// C code implements. Written here rather than taken from Google.OrTools (whose <c>LinearSumAssignment</c> brings a
/// ~100 MB native library for this one O(n³) function, and needs a square, integer cost matrix).
/// </summary>
public static class LinearSumAssignment
{
    /// <summary>
    /// A minimum-cost matching of the rows and columns of <paramref name="cost"/> [n_rows, n_cols] (rectangular allowed):
    /// min(n_rows, n_cols) pairs, each row and column used at most once, returned as SciPy does, sorted by row index.
    /// <paramref name="maximize"/> finds a maximum-cost matching instead. NaN or −∞ (+∞ when maximising) costs are an error.
    /// </summary>
    public static (int[] Rows, int[] Cols) Solve(double[,] cost, bool maximize = false)
    {
        int nr = cost.GetLength(0), nc = cost.GetLength(1);
        if (nr == 0 || nc == 0) return ([], []);
        bool transpose = nc < nr;
        int n = transpose ? nc : nr, m = transpose ? nr : nc;
        var c = new double[n, m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
            {
                double v = transpose ? cost[j, i] : cost[i, j];
                if (maximize) v = -v;
                if (double.IsNaN(v) || double.IsNegativeInfinity(v))
                    throw new SaeSharpException("linear sum assignment: the cost matrix holds NaN or an infinite value of the wrong sign");
                c[i, j] = v;
            }

        var u = new double[n];
        var v2 = new double[m];
        var shortest = new double[m];
        var path = new int[m];
        var col4row = Enumerable.Repeat(-1, n).ToArray();
        var row4col = Enumerable.Repeat(-1, m).ToArray();
        var sr = new bool[n];
        var sc = new bool[m];
        var remaining = new int[m];

        for (int cur = 0; cur < n; cur++)
        {
            // Dijkstra-like search for the shortest augmenting path from row `cur` to a free column.
            double minVal = 0;
            int numRemaining = m;
            for (int it = 0; it < m; it++) remaining[it] = m - it - 1;
            Array.Clear(sr);
            Array.Clear(sc);
            Array.Fill(shortest, double.PositiveInfinity);
            int sink = -1, i = cur;
            while (sink == -1)
            {
                int index = -1;
                double lowest = double.PositiveInfinity;
                sr[i] = true;
                for (int it = 0; it < numRemaining; it++)
                {
                    int j = remaining[it];
                    double r = minVal + c[i, j] - u[i] - v2[j];
                    if (r < shortest[j])
                    {
                        path[j] = i;
                        shortest[j] = r;
                    }
                    // Ties go to a free column, which ends the search sooner.
                    if (shortest[j] < lowest || (shortest[j] == lowest && row4col[j] == -1))
                    {
                        lowest = shortest[j];
                        index = it;
                    }
                }
                minVal = lowest;
                if (double.IsPositiveInfinity(minVal))
                    throw new SaeSharpException("linear sum assignment: the cost matrix is infeasible (a row has no finite cost left)");
                int jj = remaining[index];
                if (row4col[jj] == -1) sink = jj;
                else i = row4col[jj];
                sc[jj] = true;
                remaining[index] = remaining[--numRemaining];
            }

            // Update the dual variables.
            u[cur] += minVal;
            for (int r = 0; r < n; r++)
                if (sr[r] && r != cur) u[r] += minVal - shortest[col4row[r]];
            for (int j = 0; j < m; j++)
                if (sc[j]) v2[j] -= minVal - shortest[j];

            // Augment along the path.
            int col = sink;
            while (true)
            {
                int row = path[col];
                row4col[col] = row;
                (col4row[row], col) = (col, col4row[row]);
                if (row == cur) break;
            }
        }

        var rows = new int[n];
        var cols = new int[n];
        if (!transpose)
        {
            for (int r = 0; r < n; r++) { rows[r] = r; cols[r] = col4row[r]; }
            return (rows, cols);
        }
        // Transposed: the original rows are col4row's values; sort the pairs by them.
        var order = Enumerable.Range(0, n).OrderBy(r => col4row[r]).ToArray();
        for (int k = 0; k < n; k++) { rows[k] = col4row[order[k]]; cols[k] = order[k]; }
        return (rows, cols);
    }
}
