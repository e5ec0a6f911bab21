.intel_syntax noprefix
# Int8GemmAvx2.Tile inner loop (5 rows x 16 columns x 4 inputs per iteration: 320 int8 products) as the .NET 10 JIT emits it
# (DOTNET_EnableAVX512=0 DOTNET_EnableAVXVNNI=0 SAESHARP_KERNELS=avx2 DOTNET_JitDisasm=Tile DOTNET_JitDisasmSyntax=intel); ymm0 = ones (int16)
.LBB0:
vmovups  ymm11, ymmword ptr [rcx]
vmovups  ymm12, ymmword ptr [rcx+0x20]
add      rcx, 64
movsxd   r11, r12d
vpbroadcastd ymm13, dword ptr [rdi+r11]
vpmaddubsw ymm14, ymm13, ymm11
vpmaddwd ymm14, ymm14, ymm0
vpaddd   ymm1, ymm14, ymm1
vpmaddubsw ymm13, ymm13, ymm12
vpmaddwd ymm13, ymm13, ymm0
vpaddd   ymm2, ymm13, ymm2
vpbroadcastd ymm13, dword ptr [r15+r11]
vpmaddubsw ymm14, ymm13, ymm11
vpmaddwd ymm14, ymm14, ymm0
vpaddd   ymm3, ymm14, ymm3
vpmaddubsw ymm13, ymm13, ymm12
vpmaddwd ymm13, ymm13, ymm0
vpaddd   ymm4, ymm13, ymm4
vpbroadcastd ymm13, dword ptr [r14+r11]
vpmaddubsw ymm14, ymm13, ymm11
vpmaddwd ymm14, ymm14, ymm0
vpaddd   ymm5, ymm14, ymm5
vpmaddubsw ymm13, ymm13, ymm12
vpmaddwd ymm13, ymm13, ymm0
vpaddd   ymm6, ymm13, ymm6
vpbroadcastd ymm13, dword ptr [r11+r13]
vpmaddubsw ymm14, ymm13, ymm11
vpmaddwd ymm14, ymm14, ymm0
vpaddd   ymm7, ymm14, ymm7
vpmaddubsw ymm13, ymm13, ymm12
vpmaddwd ymm13, ymm13, ymm0
vpaddd   ymm8, ymm13, ymm8
vpbroadcastd ymm13, dword ptr [rbx+r11]
vpmaddubsw ymm11, ymm13, ymm11
vpmaddwd ymm11, ymm11, ymm0
vpaddd   ymm9, ymm11, ymm9
vpmaddubsw ymm11, ymm13, ymm12
vpmaddwd ymm11, ymm11, ymm0
vpaddd   ymm10, ymm11, ymm10
add      r12d, 4
cmp      r12d, esi
jl       .LBB0
