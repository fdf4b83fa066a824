// How many cores tlcore computes on. torch starts with one intra-op thread on
// some machines; tlcore defaults to every core the process may run on.
#pragma once

namespace tlcore {

// Cores this process may run on (its CPU affinity mask), at least 1.
int available_cores();

// Threads used by torch's intra-op pool and as the loader's default worker count.
int num_threads();

// Sets torch's intra-op threads and the loader's default; n <= 0 means all available cores.
void set_num_threads(int n);

}  // namespace tlcore
