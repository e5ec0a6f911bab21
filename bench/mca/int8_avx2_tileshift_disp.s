.intel_syntax noprefix
# A TileShift variant not kept: the same loop with the step offsets as constant address displacements (69 instructions
# an iteration instead of 75; 512 int8 products), as the .NET 10 JIT emitted it. ymm0 = 0x8000 per int32
.LBB0:
vpbroadcastd ymm6, dword ptr [r12]
vpmaddubsw ymm7, ymm6, ymmword ptr [r10]
vpmaddubsw ymm8, ymm6, ymmword ptr [r10+0x20]
vpbroadcastd ymm6, dword ptr [r12+0x04]
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
vpbroadcastd ymm6, dword ptr [r12+0x08]
vpmaddubsw ymm7, ymm6, ymmword ptr [r10+0x80]
vpmaddubsw ymm8, ymm6, ymmword ptr [r10+0xA0]
vpbroadcastd ymm6, dword ptr [r12+0x0C]
vpmaddubsw ymm9, ymm6, ymmword ptr [r10+0xC0]
vpaddw   ymm7, ymm9, ymm7
vpxor    ymm7, ymm7, ymm0
vpaddd   ymm2, ymm2, ymm7
vpsrad   ymm7, ymm7, 16
vpaddd   ymm3, ymm7, ymm3
vpmaddubsw ymm6, ymm6, ymmword ptr [r10+0xE0]
vpaddw   ymm6, ymm6, ymm8
vpxor    ymm6, ymm6, ymm0
vpaddd   ymm4, ymm4, ymm6
vpsrad   ymm6, ymm6, 16
vpaddd   ymm5, ymm6, ymm5
vpbroadcastd ymm6, dword ptr [r12+0x10]
vpmaddubsw ymm7, ymm6, ymmword ptr [r10+0x100]
vpmaddubsw ymm8, ymm6, ymmword ptr [r10+0x120]
vpbroadcastd ymm6, dword ptr [r12+0x14]
vpmaddubsw ymm9, ymm6, ymmword ptr [r10+0x140]
vpaddw   ymm7, ymm9, ymm7
vpxor    ymm7, ymm7, ymm0
vpaddd   ymm2, ymm2, ymm7
vpsrad   ymm7, ymm7, 16
vpaddd   ymm3, ymm7, ymm3
vpmaddubsw ymm6, ymm6, ymmword ptr [r10+0x160]
vpaddw   ymm6, ymm6, ymm8
vpxor    ymm6, ymm6, ymm0
vpaddd   ymm4, ymm4, ymm6
vpsrad   ymm6, ymm6, 16
vpaddd   ymm5, ymm6, ymm5
vpbroadcastd ymm6, dword ptr [r12+0x18]
vpmaddubsw ymm7, ymm6, ymmword ptr [r10+0x180]
vpmaddubsw ymm8, ymm6, ymmword ptr [r10+0x1A0]
vpbroadcastd ymm6, dword ptr [r12+0x1C]
vpmaddubsw ymm9, ymm6, ymmword ptr [r10+0x1C0]
vpaddw   ymm7, ymm9, ymm7
vpxor    ymm7, ymm7, ymm0
vpaddd   ymm2, ymm2, ymm7
vpsrad   ymm7, ymm7, 16
vpaddd   ymm3, ymm7, ymm3
vpmaddubsw ymm6, ymm6, ymmword ptr [r10+0x1E0]
vpaddw   ymm6, ymm6, ymm8
vpxor    ymm6, ymm6, ymm0
vpaddd   ymm4, ymm4, ymm6
vpsrad   ymm6, ymm6, 16
vpaddd   ymm5, ymm6, ymm5
mov      r12, r11
add      r10, 512
lea      r11, [r12+0x20]
cmp      r11, r13
jbe      .LBB0
