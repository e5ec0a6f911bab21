.intel_syntax noprefix
# Variant B: x 7-bit unsigned, w in [-63, 63]; per row, column vector and 8 inputs two vpmaddubsw added in int16
# (vpaddw), then widened without a multiply: vpxor with 0x8000 (ymm0), vpsrad by 16, two vpaddd into the
# accumulators T and H. 3 rows x 16 columns x 8 inputs = 384 products per iteration; 2 multiplies per 64
# products. Weights as memory operands, x broadcast per column vector.
.LBB0:
vpbroadcastd ymm13, dword ptr [rdi+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+0]
vpbroadcastd ymm13, dword ptr [rdi+r11+4]
vpmaddubsw ymm15, ymm13, ymmword ptr [rcx+64]
vpaddw ymm14, ymm14, ymm15
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm1, ymm1, ymm14
vpaddd ymm2, ymm2, ymm15
vpbroadcastd ymm13, dword ptr [rdi+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+32]
vpbroadcastd ymm13, dword ptr [rdi+r11+4]
vpmaddubsw ymm15, ymm13, ymmword ptr [rcx+96]
vpaddw ymm14, ymm14, ymm15
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm3, ymm3, ymm14
vpaddd ymm4, ymm4, ymm15
vpbroadcastd ymm13, dword ptr [r15+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+0]
vpbroadcastd ymm13, dword ptr [r15+r11+4]
vpmaddubsw ymm15, ymm13, ymmword ptr [rcx+64]
vpaddw ymm14, ymm14, ymm15
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm5, ymm5, ymm14
vpaddd ymm6, ymm6, ymm15
vpbroadcastd ymm13, dword ptr [r15+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+32]
vpbroadcastd ymm13, dword ptr [r15+r11+4]
vpmaddubsw ymm15, ymm13, ymmword ptr [rcx+96]
vpaddw ymm14, ymm14, ymm15
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm7, ymm7, ymm14
vpaddd ymm8, ymm8, ymm15
vpbroadcastd ymm13, dword ptr [r14+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+0]
vpbroadcastd ymm13, dword ptr [r14+r11+4]
vpmaddubsw ymm15, ymm13, ymmword ptr [rcx+64]
vpaddw ymm14, ymm14, ymm15
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm9, ymm9, ymm14
vpaddd ymm10, ymm10, ymm15
vpbroadcastd ymm13, dword ptr [r14+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+32]
vpbroadcastd ymm13, dword ptr [r14+r11+4]
vpmaddubsw ymm15, ymm13, ymmword ptr [rcx+96]
vpaddw ymm14, ymm14, ymm15
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm11, ymm11, ymm14
vpaddd ymm12, ymm12, ymm15
add rcx, 128
add r11, 8
cmp r11, rsi
jl .LBB0
