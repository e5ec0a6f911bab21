using System.Globalization;
using System.Text;

namespace SaeSharp.Synthetic;

/// <summary>
/// Writes JSON as Python's <c>json.dump(obj, f, indent=2)</c> does (what SAELens's <c>SyntheticModel.save()</c> writes),
/// byte for byte: two-space indentation, <c>", "</c>-free item separators at line ends, <c>": "</c> after keys,
/// <c>[]</c> and <c>{}</c> for empty containers, non-ASCII and control characters as <c>\u</c> and four hex digits, floats as Python's
/// <c>repr</c> (<c>1.0</c>, <c>1e-05</c>, <c>1e+16</c>), no trailing newline. Values: <see cref="PythonJson.Object"/>
/// (ordered keys), <see cref="IEnumerable{T}"/> of values, string, bool, int, long, double, null.
/// </summary>
internal static class PythonJson
{
    /// <summary>A JSON object with its keys in insertion order (Python dicts keep theirs).</summary>
    public sealed class Object : List<KeyValuePair<string, object?>>
    {
        public void Add(string key, object? value) => Add(new KeyValuePair<string, object?>(key, value));
    }

    public static string Dump(object? value)
    {
        var sb = new StringBuilder();
        Write(sb, value, 0);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? value, int depth)
    {
        switch (value)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case int i: sb.Append(i.ToString(CultureInfo.InvariantCulture)); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FloatRepr(d)); break;
            case string s: WriteString(sb, s); break;
            case Object o:
                if (o.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                for (int k = 0; k < o.Count; k++)
                {
                    sb.Append(k == 0 ? "\n" : ",\n").Append(' ', 2 * (depth + 1));
                    WriteString(sb, o[k].Key);
                    sb.Append(": ");
                    Write(sb, o[k].Value, depth + 1);
                }
                sb.Append('\n').Append(' ', 2 * depth).Append('}');
                break;
            case System.Collections.IEnumerable list:
            {
                bool first = true;
                foreach (var e in list)
                {
                    sb.Append(first ? "[\n" : ",\n").Append(' ', 2 * (depth + 1));
                    Write(sb, e, depth + 1);
                    first = false;
                }
                if (first) sb.Append("[]");
                else sb.Append('\n').Append(' ', 2 * depth).Append(']');
                break;
            }
            default: throw new ArgumentException($"PythonJson: unsupported value type {value.GetType()}");
        }
    }

    private static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || c > 0x7e) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>Python's <c>repr(float)</c>: the shortest digits that round-trip, in positional notation when the
    /// decimal exponent is in [−4, 16), else <c>d.ddde±XX</c>; <c>NaN</c>, <c>Infinity</c>, <c>-Infinity</c> as
    /// <c>json.dump</c> writes them.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "NaN";
        if (double.IsPositiveInfinity(d)) return "Infinity";
        if (double.IsNegativeInfinity(d)) return "-Infinity";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // "E16" is not shortest; "R" is (on .NET Core 3.0+), in either notation: normalise it to digits and an exponent.
        var r = Math.Abs(d).ToString("R", CultureInfo.InvariantCulture);
        int exp = 0;
        int e = r.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            exp = int.Parse(r.AsSpan(e + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            r = r[..e];
        }
        int dot = r.IndexOf('.');
        string intPart = dot < 0 ? r : r[..dot], frac = dot < 0 ? "" : r[(dot + 1)..];
        string digits = (intPart + frac).TrimStart('0');
        // Position of the decimal point relative to the first significant digit.
        int lead = (intPart + frac).Length - digits.Length;
        int pointAt = intPart.Length - lead + exp;       // digits[0..pointAt] is the integer part
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int sciExp = pointAt - 1;
        var sb = new StringBuilder();
        if (d < 0) sb.Append('-');
        if (sciExp >= -4 && sciExp < 16)
        {
            if (pointAt <= 0) sb.Append("0.").Append('0', -pointAt).Append(digits);
            else if (pointAt >= digits.Length) sb.Append(digits).Append('0', pointAt - digits.Length).Append(".0");
            else sb.Append(digits, 0, pointAt).Append('.').Append(digits, pointAt, digits.Length - pointAt);
        }
        else
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(sciExp < 0 ? '-' : '+').Append(Math.Abs(sciExp).ToString("00", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}
