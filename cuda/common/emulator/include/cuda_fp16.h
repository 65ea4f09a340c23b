// Stand-in for CUDA's cuda_fp16.h in the emulated build.
#pragma once
#include "common/emulator/low_precision.h"
