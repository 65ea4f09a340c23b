// The AMX tile configuration (palette 1), shared by the kernels built with -mamx-tile: a tile
// register's rows and bytes per row, loaded with ldtilecfg before the first tile instruction of a
// thread and released with tilerelease after its last.
#pragma once
#include <immintrin.h>

#include <cstdint>

#if !defined(__AMX_TILE__)
#error "amx_tiles.h is for sources compiled with -mamx-tile"
#endif

namespace fusegrad {

// The 64-byte operand of LDTILECFG (Intel SDM): tile i has rows[i] rows of colsb[i] bytes.
struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};

  void set(int tile, int rows_, int bytes_per_row) {
    rows[tile] = static_cast<uint8_t>(rows_);
    colsb[tile] = static_cast<uint16_t>(bytes_per_row);
  }
};

inline void load_tile_config(const AmxTileConfig& cfg) {
  // GCC 12 does not see that ldtilecfg reads the whole 64 bytes and drops the stores that built
  // them as dead (leaving empty tiles and a SIGILL at the first tile instruction); the empty asm
  // with a memory clobber keeps them.
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

}  // namespace fusegrad
