.intel_syntax noprefix
# float32 GEMM micro-kernel of the shape MKL and BLIS use on AVX2 (6 rows x 16 columns, ymm0-ymm11 accumulators):
# per k one pair of 8-float loads of B, six broadcasts of A, twelve vfmadd231ps; unrolled over 4 k:
# 4 x 96 = 384 float32 products per iteration
.LBB0:
vmovups ymm12, ymmword ptr [rsi+0]
vmovups ymm13, ymmword ptr [rsi+32]
vbroadcastss ymm14, dword ptr [rdi+0]
vfmadd231ps ymm0, ymm12, ymm14
vfmadd231ps ymm1, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+4]
vfmadd231ps ymm2, ymm12, ymm14
vfmadd231ps ymm3, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+8]
vfmadd231ps ymm4, ymm12, ymm14
vfmadd231ps ymm5, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+12]
vfmadd231ps ymm6, ymm12, ymm14
vfmadd231ps ymm7, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+16]
vfmadd231ps ymm8, ymm12, ymm14
vfmadd231ps ymm9, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+20]
vfmadd231ps ymm10, ymm12, ymm14
vfmadd231ps ymm11, ymm13, ymm14
vmovups ymm12, ymmword ptr [rsi+64]
vmovups ymm13, ymmword ptr [rsi+96]
vbroadcastss ymm14, dword ptr [rdi+24]
vfmadd231ps ymm0, ymm12, ymm14
vfmadd231ps ymm1, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+28]
vfmadd231ps ymm2, ymm12, ymm14
vfmadd231ps ymm3, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+32]
vfmadd231ps ymm4, ymm12, ymm14
vfmadd231ps ymm5, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+36]
vfmadd231ps ymm6, ymm12, ymm14
vfmadd231ps ymm7, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+40]
vfmadd231ps ymm8, ymm12, ymm14
vfmadd231ps ymm9, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+44]
vfmadd231ps ymm10, ymm12, ymm14
vfmadd231ps ymm11, ymm13, ymm14
vmovups ymm12, ymmword ptr [rsi+128]
vmovups ymm13, ymmword ptr [rsi+160]
vbroadcastss ymm14, dword ptr [rdi+48]
vfmadd231ps ymm0, ymm12, ymm14
vfmadd231ps ymm1, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+52]
vfmadd231ps ymm2, ymm12, ymm14
vfmadd231ps ymm3, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+56]
vfmadd231ps ymm4, ymm12, ymm14
vfmadd231ps ymm5, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+60]
vfmadd231ps ymm6, ymm12, ymm14
vfmadd231ps ymm7, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+64]
vfmadd231ps ymm8, ymm12, ymm14
vfmadd231ps ymm9, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+68]
vfmadd231ps ymm10, ymm12, ymm14
vfmadd231ps ymm11, ymm13, ymm14
vmovups ymm12, ymmword ptr [rsi+192]
vmovups ymm13, ymmword ptr [rsi+224]
vbroadcastss ymm14, dword ptr [rdi+72]
vfmadd231ps ymm0, ymm12, ymm14
vfmadd231ps ymm1, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+76]
vfmadd231ps ymm2, ymm12, ymm14
vfmadd231ps ymm3, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+80]
vfmadd231ps ymm4, ymm12, ymm14
vfmadd231ps ymm5, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+84]
vfmadd231ps ymm6, ymm12, ymm14
vfmadd231ps ymm7, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+88]
vfmadd231ps ymm8, ymm12, ymm14
vfmadd231ps ymm9, ymm13, ymm14
vbroadcastss ymm14, dword ptr [rdi+92]
vfmadd231ps ymm10, ymm12, ymm14
vfmadd231ps ymm11, ymm13, ymm14
add rsi, 256
add rdi, 96
dec rcx
jne .LBB0
