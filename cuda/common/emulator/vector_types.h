// CUDA's vector types (float2, float4, int4, ...) with CUDA's alignments, and their make_*.
#pragma once

#define FG_EMU_VEC1(T, N, A)                                 \
  struct __attribute__((aligned(A))) N { T x; };             \
  inline constexpr N make_##N(T x) { return N{x}; }
#define FG_EMU_VEC2(T, N, A)                                 \
  struct __attribute__((aligned(A))) N { T x, y; };          \
  inline constexpr N make_##N(T x, T y) { return N{x, y}; }
#define FG_EMU_VEC3(T, N, A)                                 \
  struct __attribute__((aligned(A))) N { T x, y, z; };       \
  inline constexpr N make_##N(T x, T y, T z) { return N{x, y, z}; }
#define FG_EMU_VEC4(T, N, A)                                 \
  struct __attribute__((aligned(A))) N { T x, y, z, w; };    \
  inline constexpr N make_##N(T x, T y, T z, T w) { return N{x, y, z, w}; }

FG_EMU_VEC1(signed char, char1, 1)
FG_EMU_VEC2(signed char, char2, 2)
FG_EMU_VEC3(signed char, char3, 1)
FG_EMU_VEC4(signed char, char4, 4)
FG_EMU_VEC1(unsigned char, uchar1, 1)
FG_EMU_VEC2(unsigned char, uchar2, 2)
FG_EMU_VEC3(unsigned char, uchar3, 1)
FG_EMU_VEC4(unsigned char, uchar4, 4)
FG_EMU_VEC1(short, short1, 2)
FG_EMU_VEC2(short, short2, 4)
FG_EMU_VEC3(short, short3, 2)
FG_EMU_VEC4(short, short4, 8)
FG_EMU_VEC1(unsigned short, ushort1, 2)
FG_EMU_VEC2(unsigned short, ushort2, 4)
FG_EMU_VEC3(unsigned short, ushort3, 2)
FG_EMU_VEC4(unsigned short, ushort4, 8)
FG_EMU_VEC1(int, int1, 4)
FG_EMU_VEC2(int, int2, 8)
FG_EMU_VEC3(int, int3, 4)
FG_EMU_VEC4(int, int4, 16)
FG_EMU_VEC1(unsigned, uint1, 4)
FG_EMU_VEC2(unsigned, uint2, 8)
FG_EMU_VEC3(unsigned, uint3, 4)
FG_EMU_VEC4(unsigned, uint4, 16)
FG_EMU_VEC1(long long, longlong1, 8)
FG_EMU_VEC2(long long, longlong2, 16)
FG_EMU_VEC1(unsigned long long, ulonglong1, 8)
FG_EMU_VEC2(unsigned long long, ulonglong2, 16)
FG_EMU_VEC1(float, float1, 4)
FG_EMU_VEC2(float, float2, 8)
FG_EMU_VEC3(float, float3, 4)
FG_EMU_VEC4(float, float4, 16)
FG_EMU_VEC1(double, double1, 8)
FG_EMU_VEC2(double, double2, 16)
FG_EMU_VEC3(double, double3, 8)

#undef FG_EMU_VEC1
#undef FG_EMU_VEC2
#undef FG_EMU_VEC3
#undef FG_EMU_VEC4

// Grid and block shapes: unspecified extents are 1.
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
