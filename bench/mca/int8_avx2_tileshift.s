.intel_syntax noprefix
# Int8GemmAvx2.TileShift inner loop (1 row x 16 columns x 32 inputs per iteration: 512 int8 products) as the .NET 10 JIT emits it
# (DOTNET_EnableAVX512=0 DOTNET_EnableAVXVNNI=0 SAESHARP_KERNELS=avx2 SAESHARP_INT8_WIDEN=shift DOTNET_JitDisasm=TileShift DOTNET_JitDisasmSyntax=intel); ymm0 = 0x8000 per int32
.LBB0:
vpbroadcastd ymm6, dword ptr [r13]
vpmaddubsw ymm7, ymm6, ymmword ptr [r10]
vpmaddubsw ymm8, ymm6, ymmword ptr [r10+0x20]
vpbroadcastd ymm6, dword ptr [r13+0x04]
vpmaddubsw ymm9, ymm6, ymmword ptr [r10+0x40]
vpaddw   ymm7, ymm9, ymm7
vpxor    ymm7, ymm7, ymm0
vpaddd   ymm2, ymm2, ymm7
vpsrad   ymm7, ymm7, 16
vpaddd   ymm3, ymm7, ymm3
vpmaddubsw ymm6, ymm6, ymmword ptr [r10+0x60]
vpaddw   ymm6, ymm6, ymm8
vpxor    ymm6, ymm6, ymm0
vpaddd   ymm4, ymm4, ymm6
vpsrad   ymm6, ymm6, 16
vpaddd   ymm5, ymm6, ymm5
lea      r11, [r13+0x08]
lea      rbx, [r10+0x80]
vpbroadcastd ymm6, dword ptr [r11]
vpmaddubsw ymm7, ymm6, ymmword ptr [rbx]
vpmaddubsw ymm8, ymm6, ymmword ptr [rbx+0x20]
vpbroadcastd ymm6, dword ptr [r11+0x04]
vpmaddubsw ymm9, ymm6, ymmword ptr [rbx+0x40]
vpaddw   ymm7, ymm9, ymm7
vpxor    ymm7, ymm7, ymm0
vpaddd   ymm2, ymm2, ymm7
vpsrad   ymm7, ymm7, 16
vpaddd   ymm3, ymm7, ymm3
vpmaddubsw ymm6, ymm6, ymmword ptr [rbx+0x60]
vpaddw   ymm6, ymm6, ymm8
vpxor    ymm6, ymm6, ymm0
vpaddd   ymm4, ymm4, ymm6
vpsrad   ymm6, ymm6, 16
vpaddd   ymm5, ymm6, ymm5
lea      r11, [r13+0x10]
lea      rbx, [r10+0x100]
vpbroadcastd ymm6, dword ptr [r11]
vpmaddubsw ymm7, ymm6, ymmword ptr [rbx]
vpmaddubsw ymm8, ymm6, ymmword ptr [rbx+0x20]
vpbroadcastd ymm6, dword ptr [r11+0x04]
vpmaddubsw ymm9, ymm6, ymmword ptr [rbx+0x40]
vpaddw   ymm7, ymm9, ymm7
vpxor    ymm7, ymm7, ymm0
vpaddd   ymm2, ymm2, ymm7
vpsrad   ymm7, ymm7, 16
vpaddd   ymm3, ymm7, ymm3
vpmaddubsw ymm6, ymm6, ymmword ptr [rbx+0x60]
vpaddw   ymm6, ymm6, ymm8
vpxor    ymm6, ymm6, ymm0
vpaddd   ymm4, ymm4, ymm6
vpsrad   ymm6, ymm6, 16
vpaddd   ymm5, ymm6, ymm5
lea      r11, [r13+0x18]
lea      rbx, [r10+0x180]
vpbroadcastd ymm6, dword ptr [r11]
vpmaddubsw ymm7, ymm6, ymmword ptr [rbx]
vpmaddubsw ymm8, ymm6, ymmword ptr [rbx+0x20]
vpbroadcastd ymm6, dword ptr [r11+0x04]
vpmaddubsw ymm9, ymm6, ymmword ptr [rbx+0x40]
vpaddw   ymm7, ymm9, ymm7
vpxor    ymm7, ymm7, ymm0
vpaddd   ymm2, ymm2, ymm7
vpsrad   ymm7, ymm7, 16
vpaddd   ymm3, ymm7, ymm3
vpmaddubsw ymm6, ymm6, ymmword ptr [rbx+0x60]
vpaddw   ymm6, ymm6, ymm8
vpxor    ymm6, ymm6, ymm0
vpaddd   ymm4, ymm4, ymm6
vpsrad   ymm6, ymm6, 16
vpaddd   ymm5, ymm6, ymm5
add      r13, 32
add      r10, 512
lea      r11, [r13+0x20]
cmp      r11, r12
jbe      .LBB0
