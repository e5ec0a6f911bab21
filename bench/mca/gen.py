"""Writes the hand-written llvm-mca inputs of bench/mca (the int8 variants considered for AMD Zen 2; BENCHMARKS.md,
"llvm-mca: the int8 candidate pass on a modelled Zen 2"). Register names follow the .NET JIT's listing of
Int8GemmAvx2.Tile (int8_avx2_tile.s): rcx = weight panel, rdi/r15/r14/... = rows of x, r11 = input offset."""
ROWS = ["rdi", "r15", "r14", "r13", "rbx", "r10"]

def write(name, header, body, tail):
    with open(name, "w") as f:
        f.write(".intel_syntax noprefix\n" + "".join(f"# {h}\n" for h in header) + ".LBB0:\n" + "\n".join(body + tail) + "\n")

TAIL = ["add rcx, 128", "add r11, 8", "cmp r11, rsi", "jl .LBB0"]

# A: x 7-bit (u = q + 64 <= 127), w +-63; two vpmaddubsw summed in int16 (vpaddw), then vpmaddwd by ones.
rows = 5
b = []
for r in range(rows):
    b.append(f"vpbroadcastd ymm11, dword ptr [{ROWS[r]}+r11]")
    b.append(f"vpbroadcastd ymm12, dword ptr [{ROWS[r]}+r11+4]")
    for c in range(2):
        b.append(f"vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+{32*c}]")
        b.append(f"vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+{64+32*c}]")
        b.append("vpaddw ymm13, ymm13, ymm14")
        b.append("vpmaddwd ymm13, ymm13, ymm0")
        b.append(f"vpaddd ymm{1+2*r+c}, ymm{1+2*r+c}, ymm13")
write("int8_pair_pmaddwd_5x16.s",
      ["Variant A: x 7-bit unsigned (q + 64, q in [-63, 63]), w in [-63, 63]; per row, column vector and 8 inputs",
       "two vpmaddubsw (weights as memory operands) added in int16 (|sum| <= 4*127*63 = 32004), one vpmaddwd by ones",
       "(ymm0), one vpaddd. 5 rows x 16 columns x 8 inputs = 640 products per iteration; 3 multiplies per 64 products."],
      b, TAIL)

# B: as A, but widened without a multiply: t ^= 0x8000 (low int16 biased to unsigned), h = t >>a 16,
# T += t, H += h; at the end sum = (T - 65536*H - 32768*m) + H (mod 2^32). ymm0 = 0x00008000 per int32.
def variant_b(rows, wregs):
    b = []
    acc = 1
    T = {}
    for r in range(rows):
        for c in range(2):
            T[(r, c)] = (acc, acc + 1); acc += 2
    free = list(range(acc, 16))
    wr = {}
    if wregs:
        for g in range(2):
            wr[(0, g)] = free.pop(0)
            b.append(f"vmovdqu ymm{wr[(0, g)]}, ymmword ptr [rcx+{64*g}]")
    # Three rows leave three registers: the broadcasts are then repeated per column vector.
    rebroadcast = len(free) < 4
    bx0, t, u = free[:3]
    bx1 = bx0 if rebroadcast else free[3]
    for r in range(rows):
        if not rebroadcast:
            b.append(f"vpbroadcastd ymm{bx0}, dword ptr [{ROWS[r]}+r11]")
            b.append(f"vpbroadcastd ymm{bx1}, dword ptr [{ROWS[r]}+r11+4]")
        for c in range(2):
            w0 = f"ymm{wr[(c, 0)]}" if (c, 0) in wr else f"ymmword ptr [rcx+{32*c}]"
            w1 = f"ymm{wr[(c, 1)]}" if (c, 1) in wr else f"ymmword ptr [rcx+{64+32*c}]"
            if rebroadcast: b.append(f"vpbroadcastd ymm{bx0}, dword ptr [{ROWS[r]}+r11]")
            b.append(f"vpmaddubsw ymm{t}, ymm{bx0}, {w0}")
            if rebroadcast: b.append(f"vpbroadcastd ymm{bx1}, dword ptr [{ROWS[r]}+r11+4]")
            b.append(f"vpmaddubsw ymm{u}, ymm{bx1}, {w1}")
            b.append(f"vpaddw ymm{t}, ymm{t}, ymm{u}")
            b.append(f"vpxor ymm{t}, ymm{t}, ymm0")
            b.append(f"vpsrad ymm{u}, ymm{t}, 16")
            tt, hh = T[(r, c)]
            b.append(f"vpaddd ymm{tt}, ymm{tt}, ymm{t}")
            b.append(f"vpaddd ymm{hh}, ymm{hh}, ymm{u}")
    return b
for rows, wregs in [(2, True), (3, False)]:
    write(f"int8_pair_shift_{rows}x16.s",
          [f"Variant B: x 7-bit unsigned, w in [-63, 63]; per row, column vector and 8 inputs two vpmaddubsw added in int16",
           "(vpaddw), then widened without a multiply: vpxor with 0x8000 (ymm0), vpsrad by 16, two vpaddd into the",
           f"accumulators T and H. {rows} rows x 16 columns x 8 inputs = {rows*128} products per iteration; 2 multiplies per 64",
           "products." + (" The first column vector's weights in registers." if wregs else " Weights as memory operands, x broadcast per column vector.")],
          variant_b(rows, wregs), TAIL)

# C: x 8-bit as now (q + 128), w +-63; each vpmaddubsw widened by vpxor/vpsrad/2 vpaddd (no pair add).
rows = 3
b = []
for r in range(rows):
    b.append(f"vpbroadcastd ymm13, dword ptr [{ROWS[r]}+r11]")
    for c in range(2):
        tt, hh = 1 + 4 * r + 2 * c, 2 + 4 * r + 2 * c
        b.append(f"vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+{32*c}]")
        b.append("vpxor ymm14, ymm14, ymm0")
        b.append("vpsrad ymm15, ymm14, 16")
        b.append(f"vpaddd ymm{tt}, ymm{tt}, ymm14")
        b.append(f"vpaddd ymm{hh}, ymm{hh}, ymm15")
write("int8_single_shift_3x16.s",
      ["Variant C: x 8-bit unsigned as now (q + 128), w in [-63, 63]; each vpmaddubsw widened by vpxor 0x8000, vpsrad 16",
       "and two vpaddd. 3 rows x 16 columns x 4 inputs = 192 products per iteration; 1 multiply per 32 products."],
      b, ["add rcx, 64", "add r11, 4", "cmp r11, rsi", "jl .LBB0"])
