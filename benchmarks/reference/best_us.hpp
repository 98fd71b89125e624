// Timing shared by the benchmark programs in this folder.
#pragma once

#include <algorithm>
#include <chrono>

// Best µs of one call of fn over `rounds` rounds of `calls` calls: the best round is the
// one least disturbed by the rest of the machine.
template <class Fn>
double best_us(Fn&& fn, int calls, int rounds) {
  double best = 1e300;
  for (int round = 0; round < rounds; ++round) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) fn();
    const auto end = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::micro>(end - start).count() / calls);
  }
  return best;
}
