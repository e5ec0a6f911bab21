.intel_syntax noprefix
# Variant C: x 8-bit unsigned as now (q + 128), w in [-63, 63]; each vpmaddubsw widened by vpxor 0x8000, vpsrad 16
# and two vpaddd. 3 rows x 16 columns x 4 inputs = 192 products per iteration; 1 multiply per 32 products.
.LBB0:
vpbroadcastd ymm13, dword ptr [rdi+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+0]
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm1, ymm1, ymm14
vpaddd ymm2, ymm2, ymm15
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+32]
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm3, ymm3, ymm14
vpaddd ymm4, ymm4, ymm15
vpbroadcastd ymm13, dword ptr [r15+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+0]
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm5, ymm5, ymm14
vpaddd ymm6, ymm6, ymm15
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+32]
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm7, ymm7, ymm14
vpaddd ymm8, ymm8, ymm15
vpbroadcastd ymm13, dword ptr [r14+r11]
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+0]
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm9, ymm9, ymm14
vpaddd ymm10, ymm10, ymm15
vpmaddubsw ymm14, ymm13, ymmword ptr [rcx+32]
vpxor ymm14, ymm14, ymm0
vpsrad ymm15, ymm14, 16
vpaddd ymm11, ymm11, ymm14
vpaddd ymm12, ymm12, ymm15
add rcx, 64
add r11, 4
cmp r11, rsi
jl .LBB0
