.intel_syntax noprefix
# Variant B: x 7-bit unsigned, w in [-63, 63]; per row, column vector and 8 inputs two vpmaddubsw added in int16
# (vpaddw), then widened without a multiply: vpxor with 0x8000 (ymm0), vpsrad by 16, two vpaddd into the
# accumulators T and H. 2 rows x 16 columns x 8 inputs = 256 products per iteration; 2 multiplies per 64
# products. The first column vector's weights in registers.
.LBB0:
vmovdqu ymm9, ymmword ptr [rcx+0]
vmovdqu ymm10, ymmword ptr [rcx+64]
vpbroadcastd ymm11, dword ptr [rdi+r11]
vpbroadcastd ymm14, dword ptr [rdi+r11+4]
vpmaddubsw ymm12, ymm11, ymm9
vpmaddubsw ymm13, ymm14, ymm10
vpaddw ymm12, ymm12, ymm13
vpxor ymm12, ymm12, ymm0
vpsrad ymm13, ymm12, 16
vpaddd ymm1, ymm1, ymm12
vpaddd ymm2, ymm2, ymm13
vpmaddubsw ymm12, ymm11, ymmword ptr [rcx+32]
vpmaddubsw ymm13, ymm14, ymmword ptr [rcx+96]
vpaddw ymm12, ymm12, ymm13
vpxor ymm12, ymm12, ymm0
vpsrad ymm13, ymm12, 16
vpaddd ymm3, ymm3, ymm12
vpaddd ymm4, ymm4, ymm13
vpbroadcastd ymm11, dword ptr [r15+r11]
vpbroadcastd ymm14, dword ptr [r15+r11+4]
vpmaddubsw ymm12, ymm11, ymm9
vpmaddubsw ymm13, ymm14, ymm10
vpaddw ymm12, ymm12, ymm13
vpxor ymm12, ymm12, ymm0
vpsrad ymm13, ymm12, 16
vpaddd ymm5, ymm5, ymm12
vpaddd ymm6, ymm6, ymm13
vpmaddubsw ymm12, ymm11, ymmword ptr [rcx+32]
vpmaddubsw ymm13, ymm14, ymmword ptr [rcx+96]
vpaddw ymm12, ymm12, ymm13
vpxor ymm12, ymm12, ymm0
vpsrad ymm13, ymm12, 16
vpaddd ymm7, ymm7, ymm12
vpaddd ymm8, ymm8, ymm13
add rcx, 128
add r11, 8
cmp r11, rsi
jl .LBB0
