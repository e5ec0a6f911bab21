.intel_syntax noprefix
# Variant A: x 7-bit unsigned (q + 64, q in [-63, 63]), w in [-63, 63]; per row, column vector and 8 inputs
# two vpmaddubsw (weights as memory operands) added in int16 (|sum| <= 4*127*63 = 32004), one vpmaddwd by ones
# (ymm0), one vpaddd. 5 rows x 16 columns x 8 inputs = 640 products per iteration; 3 multiplies per 64 products.
.LBB0:
vpbroadcastd ymm11, dword ptr [rdi+r11]
vpbroadcastd ymm12, dword ptr [rdi+r11+4]
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+0]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+64]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm1, ymm1, ymm13
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+32]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+96]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm2, ymm2, ymm13
vpbroadcastd ymm11, dword ptr [r15+r11]
vpbroadcastd ymm12, dword ptr [r15+r11+4]
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+0]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+64]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm3, ymm3, ymm13
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+32]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+96]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm4, ymm4, ymm13
vpbroadcastd ymm11, dword ptr [r14+r11]
vpbroadcastd ymm12, dword ptr [r14+r11+4]
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+0]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+64]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm5, ymm5, ymm13
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+32]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+96]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm6, ymm6, ymm13
vpbroadcastd ymm11, dword ptr [r13+r11]
vpbroadcastd ymm12, dword ptr [r13+r11+4]
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+0]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+64]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm7, ymm7, ymm13
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+32]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+96]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm8, ymm8, ymm13
vpbroadcastd ymm11, dword ptr [rbx+r11]
vpbroadcastd ymm12, dword ptr [rbx+r11+4]
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+0]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+64]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm9, ymm9, ymm13
vpmaddubsw ymm13, ymm11, ymmword ptr [rcx+32]
vpmaddubsw ymm14, ymm12, ymmword ptr [rcx+96]
vpaddw ymm13, ymm13, ymm14
vpmaddwd ymm13, ymm13, ymm0
vpaddd ymm10, ymm10, ymm13
add rcx, 128
add r11, 8
cmp r11, rsi
jl .LBB0
