// Stand-in for CUDA's cuda_bf16.h in the emulated build.
#pragma once
#include "common/emulator/low_precision.h"
