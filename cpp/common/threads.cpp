#include "common/threads.h"

namespace fusegrad {

void set_num_threads(int n) { omp_set_num_threads(n); }

int get_num_threads() { return omp_get_max_threads(); }

namespace {
bool g_flush_denormals = true;
}  // namespace

void set_flush_denormals(bool on) { g_flush_denormals = on; }

bool flush_denormals() { return g_flush_denormals; }

}  // namespace fusegrad
