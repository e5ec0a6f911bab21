using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace SaeSharp.IO;

/// <summary>A Python callable the unpickler may invoke (through REDUCE or NEWOBJ). Only the loader
/// creates these, for its allow-list; nothing else is ever callable.</summary>
internal sealed class PickleCallable(string qualifiedName, Func<object?[], object?> invoke)
{
    public string QualifiedName { get; } = qualifiedName;
    public object? Invoke(object?[] args) => invoke(args);
    public override string ToString() => QualifiedName;
}

/// <summary>An allowed global that is a value rather than a callable (a storage type, a dtype, a class
/// used only as a marker).</summary>
internal sealed class PickleMarker(string qualifiedName, object? payload)
{
    public string QualifiedName { get; } = qualifiedName;
    public object? Payload { get; } = payload;
    public override string ToString() => QualifiedName;
}

/// <summary>Equality for pickled dictionary keys and set members: tuples (object?[]) compare by content.
/// A hostile file can nest tuples thousands deep or share sub-tuples so that their expanded size is exponential;
/// every hash and comparison therefore visits at most <see cref="MaxKeyNodes"/> tuple elements and throws a
/// <see cref="SaeSharpException"/> beyond that (which also bounds the recursion depth).</summary>
internal sealed class PickleKeyComparer : IEqualityComparer<object>
{
    public static readonly PickleKeyComparer Instance = new();

    /// <summary>The most tuple elements one key may hold, counted through nested tuples.</summary>
    public const int MaxKeyNodes = 256;

    public new bool Equals(object? x, object? y)
    {
        int budget = MaxKeyNodes;
        return Equal(x, y, ref budget);
    }

    static bool Equal(object? x, object? y, ref int budget)
    {
        if (ReferenceEquals(x, y)) return true;
        if (x is object?[] a && y is object?[] b)
        {
            if (a.Length != b.Length) return false;
            if ((budget -= a.Length) < 0) throw TooLarge();
            for (int i = 0; i < a.Length; i++)
            {
                if (a[i] is null ? b[i] is not null : !Equal(a[i], b[i], ref budget)) return false;
            }
            return true;
        }
        return object.Equals(x, y);
    }

    public int GetHashCode(object obj)
    {
        int budget = MaxKeyNodes;
        return Hash(obj, ref budget);
    }

    static int Hash(object? obj, ref int budget)
    {
        if (obj is null) return 0;
        if (obj is object?[] a)
        {
            if ((budget -= a.Length) < 0) throw TooLarge();
            var h = new HashCode();
            foreach (var item in a) h.Add(Hash(item, ref budget));
            return h.ToHashCode();
        }
        return obj.GetHashCode();
    }

    static SaeSharpException TooLarge() =>
        new($"a dictionary key or set member holds more than {MaxKeyNodes} nested tuple elements; a state_dict never does (hostile or corrupt pickle)");
}

/// <summary>A restricted pickle virtual machine (protocols 2–5, plus the numeric text opcodes of 0–1).
/// It builds only plain data: None → null, bool, int → long (or <see cref="BigInteger"/>), float → double,
/// str → string, bytes → byte[], tuple → object?[], list → List&lt;object?&gt;,
/// dict → OrderedDictionary&lt;object, object?&gt;, set → HashSet&lt;object&gt;.
/// Globals are resolved through <paramref name="resolveGlobal"/>, which returns null for anything not
/// allow-listed (the unpickler then stops at once); the opcodes that construct arbitrary objects (INST, OBJ, NEWOBJ_EX on unknown types,
/// EXT*, out-of-band buffers) are refused. Nothing is ever executed except the allow-listed callables.</summary>
internal sealed class TorchPickleUnpickler(
    byte[] data,
    string source,
    Func<string, string, object?> resolveGlobal,
    Func<object?, object?> persistentLoad)
{
    /// <summary>Deepest tuple nesting accepted: far beyond any real checkpoint, far below what overflows the stack
    /// of code that walks the result recursively.</summary>
    public const int MaxTupleDepth = 100;

    /// <summary>Longest text integer (INT/LONG opcodes), as Python's int_max_str_digits: parsing is superlinear.</summary>
    const int MaxIntDigits = 4300;

    readonly List<object?> _stack = new();
    // MARK records the stack height (O(1)); PopMark takes the items above it. Copying the stack at each MARK would
    // make a file of n MARKs cost n² copies.
    readonly Stack<int> _marks = new();
    readonly Dictionary<object?[], int> _tupleDepth = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<long, object?> _memo = new();
    int _pos;
    int _opStart;

    public object? Load()
    {
        while (true)
        {
            _opStart = _pos;
            byte op = ReadByte();
            switch (op)
            {
                case 0x80: // PROTO
                    {
                        int proto = ReadByte();
                        if (proto > 5) throw Fail($"pickle protocol {proto} is newer than the supported 5");
                        break;
                    }
                case 0x95: // FRAME
                    Take(8);
                    break;
                case (byte)'.': // STOP
                    {
                        if (_marks.Count != 0) throw Fail("STOP inside an unclosed MARK");
                        if (_stack.Count != 1) throw Fail($"STOP with {_stack.Count} items on the stack, expected 1");
                        return _stack[0];
                    }

                // ---- constants and numbers
                case (byte)'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break;
                case (byte)'K': Push((long)ReadByte()); break;
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break;
                case 0x8a: Push(ReadLong(ReadByte())); break; // LONG1
                case 0x8b: // LONG4
                    {
                        int n = BinaryPrimitives.ReadInt32LittleEndian(Take(4));
                        if (n < 0) throw Fail("LONG4 with a negative length");
                        Push(ReadLong(n));
                        break;
                    }
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break; // BINFLOAT
                case (byte)'I': Push(ParseTextInt(ReadLine())); break; // INT
                case (byte)'L': Push(ParseTextLong(ReadLine())); break; // LONG
                case (byte)'F': // FLOAT
                    {
                        string line = ReadLine();
                        if (!double.TryParse(line, NumberStyles.Float, CultureInfo.InvariantCulture, out double d))
                            throw Fail($"FLOAT with unparsable text '{line}'");
                        Push(d);
                        break;
                    }

                // ---- strings and bytes
                case (byte)'X': Push(Utf8(Take(CheckedLength(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))))); break;
                case 0x8c: Push(Utf8(Take(ReadByte()))); break; // SHORT_BINUNICODE
                case 0x8d: Push(Utf8(Take(CheckedLength(BinaryPrimitives.ReadUInt64LittleEndian(Take(8)))))); break;
                case (byte)'T': // BINSTRING (Python 2 str, decoded as Latin-1)
                    {
                        int n = BinaryPrimitives.ReadInt32LittleEndian(Take(4));
                        if (n < 0) throw Fail("BINSTRING with a negative length");
                        Push(Encoding.Latin1.GetString(Take(n)));
                        break;
                    }
                case (byte)'U': Push(Encoding.Latin1.GetString(Take(ReadByte()))); break; // SHORT_BINSTRING
                case (byte)'B': Push(Take(CheckedLength(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))).ToArray()); break;
                case (byte)'C': Push(Take(ReadByte()).ToArray()); break; // SHORT_BINBYTES
                case 0x8e: // BINBYTES8
                case 0x96: // BYTEARRAY8
                    Push(Take(CheckedLength(BinaryPrimitives.ReadUInt64LittleEndian(Take(8)))).ToArray());
                    break;
                case (byte)'S':
                case (byte)'V':
                    throw Fail($"protocol-0 text string opcode {OpName(op)} is not supported (save with protocol 2 or later)");

                // ---- containers
                case (byte)'(': _marks.Push(_stack.Count); break; // MARK
                case (byte)')': Push(Array.Empty<object?>()); break;
                case 0x85: { var a = Pop(); Push(Tuple([a])); break; }
                case 0x86: { var b = Pop(); var a = Pop(); Push(Tuple([a, b])); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(Tuple([a, b, c])); break; }
                case (byte)'t': Push(Tuple(PopMark().ToArray())); break; // TUPLE
                case (byte)']': Push(new List<object?>()); break;
                case (byte)'l': Push(PopMark()); break; // LIST
                case (byte)'a': // APPEND
                    {
                        var item = Pop();
                        AsList(Peek(), "APPEND").Add(item);
                        break;
                    }
                case (byte)'e': // APPENDS
                    {
                        var items = PopMark();
                        AsList(Peek(), "APPENDS").AddRange(items);
                        break;
                    }
                case (byte)'}': Push(NewDict()); break;
                case (byte)'d': // DICT
                    {
                        var items = PopMark();
                        var dict = NewDict();
                        SetItems(dict, items);
                        Push(dict);
                        break;
                    }
                case (byte)'s': // SETITEM
                    {
                        var value = Pop();
                        var key = Pop();
                        SetItems(AsDict(Peek(), "SETITEM"), [key, value]);
                        break;
                    }
                case (byte)'u': // SETITEMS
                    {
                        var items = PopMark();
                        SetItems(AsDict(Peek(), "SETITEMS"), items);
                        break;
                    }
                case 0x8f: Push(new HashSet<object>(PickleKeyComparer.Instance)); break; // EMPTY_SET
                case 0x90: // ADDITEMS
                    {
                        var items = PopMark();
                        if (Peek() is not HashSet<object> set) throw Fail("ADDITEMS on something that is not a set");
                        foreach (var item in items) set.Add(item ?? throw Fail("None as a set member is not supported"));
                        break;
                    }
                case 0x91: // FROZENSET
                    {
                        var set = new HashSet<object>(PickleKeyComparer.Instance);
                        foreach (var item in PopMark()) set.Add(item ?? throw Fail("None as a set member is not supported"));
                        Push(set);
                        break;
                    }

                // ---- stack and memo
                case (byte)'0': Pop(); break; // POP
                case (byte)'1': PopMark(); break; // POP_MARK
                case (byte)'2': Push(Peek()); break; // DUP
                case (byte)'p': Put(ParseMemoKey(ReadLine())); break; // PUT
                case (byte)'q': Put(ReadByte()); break; // BINPUT
                case (byte)'r': Put(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))); break; // LONG_BINPUT
                case 0x94: Put(_memo.Count); break; // MEMOIZE
                case (byte)'g': Push(Get(ParseMemoKey(ReadLine()))); break; // GET
                case (byte)'h': Push(Get(ReadByte())); break; // BINGET
                case (byte)'j': Push(Get(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break; // LONG_BINGET

                // ---- globals, calls, persistence
                case (byte)'c': // GLOBAL
                    {
                        string module = ReadLine();
                        string name = ReadLine();
                        Push(Resolve(module, name));
                        break;
                    }
                case 0x93: // STACK_GLOBAL
                    {
                        var name = Pop();
                        var module = Pop();
                        if (module is not string m || name is not string n) throw Fail("STACK_GLOBAL with non-string module or name");
                        Push(Resolve(m, n));
                        break;
                    }
                case (byte)'R': // REDUCE
                    {
                        var args = Pop();
                        var func = Pop();
                        Push(Call(func, args, "REDUCE"));
                        break;
                    }
                case 0x81: // NEWOBJ: cls.__new__(cls, *args); only allow-listed callables
                    {
                        var args = Pop();
                        var cls = Pop();
                        Push(Call(cls, args, "NEWOBJ"));
                        break;
                    }
                case (byte)'b': // BUILD
                    {
                        var state = Pop();
                        Build(Peek(), state);
                        break;
                    }
                case (byte)'Q': Push(persistentLoad(Pop())); break; // BINPERSID
                case (byte)'P': Push(persistentLoad(ReadLine())); break; // PERSID

                case (byte)'i': // INST
                case (byte)'o': // OBJ
                case 0x92: // NEWOBJ_EX
                case 0x82: // EXT1
                case 0x83: // EXT2
                case 0x84: // EXT4
                case 0x97: // NEXT_BUFFER
                case 0x98: // READONLY_BUFFER
                    throw Fail($"refused pickle opcode {OpName(op)}: it can construct arbitrary objects and is never needed for tensors");
                default:
                    throw Fail($"unknown pickle opcode 0x{op:x2}");
            }
        }
    }

    object Resolve(string module, string name) =>
        resolveGlobal(module, name)
        ?? throw Fail($"refused global '{module}.{name}': only tensors, storages and plain containers may be unpickled (torch weights_only rules); the file may be malicious");

    object? Call(object? func, object? args, string opcode)
    {
        if (func is not PickleCallable callable)
            throw Fail($"{opcode} on {Describe(func)}, which is not an allowed callable");
        if (args is not object?[] tuple)
            throw Fail($"{opcode} of {callable.QualifiedName} with arguments that are not a tuple");
        try
        {
            return callable.Invoke(tuple);
        }
        catch (SaeSharpException)
        {
            throw;
        }
        catch (Exception e) when (e is InvalidCastException or ArgumentException or IndexOutOfRangeException or OverflowException)
        {
            throw Fail($"bad arguments for {callable.QualifiedName}: {e.Message}");
        }
    }

    void Build(object? target, object? state)
    {
        // BUILD sets an object's __dict__ / __setstate__. Only the attribute dictionaries of
        // OrderedDict (state_dict's _metadata) and tensors are accepted; they carry no data we need.
        bool allowedTarget = target is OrderedDictionary<object, object?> || target is TorchSharp.torch.Tensor;
        if (!allowedTarget)
            throw Fail($"refused BUILD on {Describe(target)}: only dictionaries and tensors may receive state");
        bool allowedState = state is null or OrderedDictionary<object, object?>
            || (state is object?[] { Length: 2 } pair
                && (pair[0] is null or OrderedDictionary<object, object?>)
                && (pair[1] is null or OrderedDictionary<object, object?>));
        if (!allowedState)
            throw Fail($"refused BUILD with state {Describe(state)}: expected an attribute dictionary");
    }

    static OrderedDictionary<object, object?> NewDict() => new(PickleKeyComparer.Instance);

    void SetItems(OrderedDictionary<object, object?> dict, List<object?> items)
    {
        if (items.Count % 2 != 0) throw Fail("odd number of items for a dictionary");
        for (int i = 0; i < items.Count; i += 2)
            dict[items[i] ?? throw Fail("None as a dictionary key is not supported")] = items[i + 1];
    }

    List<object?> AsList(object? o, string opcode) =>
        o as List<object?> ?? throw Fail($"{opcode} on {Describe(o)}, expected a list");

    OrderedDictionary<object, object?> AsDict(object? o, string opcode) =>
        o as OrderedDictionary<object, object?> ?? throw Fail($"{opcode} on {Describe(o)}, expected a dictionary");

    void Push(object? o) => _stack.Add(o);

    /// <summary>The stack height below which the current MARK frame may not reach (Python starts a fresh stack at MARK).</summary>
    int Floor => _marks.Count == 0 ? 0 : _marks.Peek();

    object? Pop()
    {
        if (_stack.Count <= Floor) throw Fail("stack underflow (corrupt pickle)");
        var o = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return o;
    }

    object? Peek()
    {
        if (_stack.Count <= Floor) throw Fail("stack underflow (corrupt pickle)");
        return _stack[^1];
    }

    List<object?> PopMark()
    {
        if (_marks.Count == 0) throw Fail("MARK expected but not found (corrupt pickle)");
        int mark = _marks.Pop();
        var items = _stack.GetRange(mark, _stack.Count - mark);
        _stack.RemoveRange(mark, _stack.Count - mark);
        return items;
    }

    /// <summary>A new tuple, refused when it would nest tuples deeper than <see cref="MaxTupleDepth"/>.</summary>
    object?[] Tuple(object?[] items)
    {
        int depth = 1;
        foreach (var item in items)
        {
            if (item is object?[] child) depth = Math.Max(depth, 1 + (_tupleDepth.TryGetValue(child, out int d) ? d : 1));
        }
        if (depth > MaxTupleDepth)
            throw Fail($"tuples nested more than {MaxTupleDepth} deep; a state_dict never is (hostile or corrupt pickle)");
        if (depth > 1) _tupleDepth[items] = depth;
        return items;
    }

    void Put(long key)
    {
        if (_stack.Count <= Floor) throw Fail("memo PUT with an empty stack");
        _memo[key] = _stack[^1];
    }

    object? Get(long key) =>
        _memo.TryGetValue(key, out var o) ? o : throw Fail($"memo key {key} is not defined");

    byte ReadByte()
    {
        if (_pos >= data.Length) throw Fail("unexpected end of data (truncated pickle, no STOP)");
        return data[_pos++];
    }

    ReadOnlySpan<byte> Take(int n)
    {
        if (n < 0 || n > data.Length - _pos)
            throw Fail($"needs {n} more bytes but only {data.Length - _pos} remain (truncated pickle)");
        var span = data.AsSpan(_pos, n);
        _pos += n;
        return span;
    }

    int CheckedLength(ulong n)
    {
        if (n > (ulong)(data.Length - _pos))
            throw Fail($"declares {n} bytes but only {data.Length - _pos} remain (truncated pickle)");
        return (int)n;
    }

    string ReadLine()
    {
        int end = Array.IndexOf(data, (byte)'\n', _pos);
        if (end < 0) throw Fail("unterminated text argument (truncated pickle)");
        string s = Encoding.UTF8.GetString(data, _pos, end - _pos);
        _pos = end + 1;
        return s;
    }

    string Utf8(ReadOnlySpan<byte> bytes)
    {
        try
        {
            return new UTF8Encoding(false, true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw Fail("string is not valid UTF-8");
        }
    }

    object ReadLong(int n)
    {
        var value = new BigInteger(Take(n), isUnsigned: false, isBigEndian: false);
        return Int(value);
    }

    object ParseTextInt(string line) => line switch
    {
        "00" => false,
        "01" => true,
        _ => ParseTextLong(line),
    };

    /// <summary>A Python int as the unpickler pushes it: a long when it fits in 64 bits, else a BigInteger.</summary>
    /// <remarks>Not a conditional expression: <c>c ? (long)v : v</c> has type BigInteger and would never give a long.</remarks>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1859", Justification = "a boxed long or a BigInteger by design; the analyzer sees only the BigInteger")]
    static object Int(BigInteger value)
    {
        if (value >= long.MinValue && value <= long.MaxValue) return (long)value;
        return value;
    }

    object ParseTextLong(string line)
    {
        string digits = line.EndsWith('L') ? line[..^1] : line;
        if (digits.Length > MaxIntDigits) throw Fail($"text integer of {digits.Length} digits exceeds the limit of {MaxIntDigits}");
        if (!BigInteger.TryParse(digits, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
            throw Fail($"integer opcode with unparsable text '{line}'");
        return Int(value);
    }

    long ParseMemoKey(string line) =>
        long.TryParse(line, NumberStyles.None, CultureInfo.InvariantCulture, out long k) ? k : throw Fail($"bad memo key '{line}'");

    static string Describe(object? o) => o switch
    {
        null => "None",
        PickleCallable c => c.QualifiedName,
        PickleMarker m => m.QualifiedName,
        string => "a string",
        object?[] => "a tuple",
        List<object?> => "a list",
        OrderedDictionary<object, object?> => "a dictionary",
        TorchSharp.torch.Tensor => "a tensor",
        _ => "a " + o.GetType().Name,
    };

    static string OpName(byte op) => op switch
    {
        (byte)'i' => "INST",
        (byte)'o' => "OBJ",
        0x92 => "NEWOBJ_EX",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        (byte)'S' => "STRING",
        (byte)'V' => "UNICODE",
        _ => $"0x{op:x2}",
    };

    /// <summary>An error naming the source and the byte offset of the failing opcode.</summary>
    public SaeSharpException Fail(string what) => new($"{source}: {what} (at byte {_opStart} of the pickle).");
}
