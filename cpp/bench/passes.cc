// The core's memory passes on one big float32 tensor, timed side by side in one process
// (rounds interleaved): the update passes of each rule, forward and in the reverse chunk
// order used after a norm pass, the clip-norm pass alone, and a whole clipped step.
// No Python, no TensorFlow: what the kernels and pyopt's thread pool reach on this machine.
//
//   tools/core_bench.sh [elements] [threads]      (default 16M elements, all cores)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "pyopt/apply.h"
#include "pyopt/dispatch.h"
#include "pyopt/parallel.h"
#include "pyopt/rules.h"

using namespace pyopt;

int main(int argc, char** argv) {
  const std::int64_t n = argc > 1 ? std::atoll(argv[1]) : std::int64_t(16) << 20;
  const int threads = argc > 2 ? std::atoi(argv[2]) : int(std::max(1u, std::thread::hardware_concurrency()));
  if (n <= 0 || threads <= 0) {
    std::fprintf(stderr, "usage: %s [elements > 0] [threads > 0]\n", argv[0]);
    return 2;
  }
  std::vector<float> p(size_t(n), 1.0f), g(size_t(n), 0.5f), m(size_t(n), 0.0f), v(size_t(n), 0.0f);
  ThreadPool pool(threads);
  const Executor exec = [&](std::int64_t k, const std::function<void(std::int64_t, std::int64_t)>& fn) {
    pool.parallel_for(k, fn);
  };
  std::vector<TensorSlots<float>> t(1);
  t[0].param = p.data();
  t[0].grad = g.data();
  t[0].slots[0] = m.data();
  t[0].slots[1] = v.data();
  t[0].size = n;
  const ChunkPlan plan = plan_chunks({n});
  const std::vector<double> scales{1.0};
  GradientOptions unclipped, clipped;
  clipped.clipnorm = 1.0;
  std::vector<double> clip_scales;
  struct Case {
    std::string name;
    double bytes_per_element;  // nominal traffic (a clipped step: + 4 for the norm pass's read of g)
    std::function<void()> run;
  };
  // The norm pass alone, then per rule: the whole step (apply_*: plan, then the update pass),
  // the update pass in the reverse chunk order a clipped step uses, and the whole clipped step
  // (a norm pass and the reverse update when n > kChunkElems; a tensor of one chunk is normed
  // inside its update instead).
  std::vector<Case> cases = {
      {"norm pass (sum of squares of g)", 4, [&] { gradient_scales(t, plan, clipped, exec, clip_scales); }}};
  // Per rule, its defaults with a tiny lr (the values stay put over the rounds), no optional slots;
  // nominal bytes: read g, read and write p and each slot (float32).
  const auto add_rule = [&](auto rule) {
    using Rule = decltype(rule);
    auto hyper = defaults<Rule>();
    hyper.lr = 1e-9;
    std::size_t slots = 0;
    for (const auto& s : Rule::kSlots) slots += !s.optional();
    const double bytes = 4.0 * double(3 + 2 * slots);
    const std::string name = Rule::kName;
    cases.push_back({name + " update", bytes, [&, hyper] { apply<Rule>(t, hyper, unclipped, exec); }});
    cases.push_back({name + " update, reverse order", bytes, [&, update = Update<Rule, float>(hyper)] {
                       detail::update_pass(t, plan, scales, exec, update, /*after_norm_pass=*/true);
                     }});
    cases.push_back(
        {name + " clipped (norm + reverse update)", bytes + 4, [&, hyper] { apply<Rule>(t, hyper, clipped, exec); }});
  };
#define PYOPT_ADD_RULE(Rule) add_rule(Rule{});
  PYOPT_RULES(PYOPT_ADD_RULE)
#undef PYOPT_ADD_RULE

  const int rounds = 12, reps = 5;
  std::vector<std::vector<double>> ms(cases.size());
  for (auto& c : cases) c.run();  // warm up: first touch of the pages
  for (int r = 0; r < rounds; ++r)
    for (size_t c = 0; c < cases.size(); ++c) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) cases[c].run();
      ms[c].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps);
    }
  std::printf("%lld float32 elements, %d threads, ISA %s; median of %d rounds (min)\n", (long long)n, threads,
              isa_name(active_isa()), rounds);
  std::printf("| pass | ms | GB/s (nominal bytes) |\n|---|---:|---:|\n");
  for (size_t c = 0; c < cases.size(); ++c) {
    std::vector<double> s = ms[c];
    std::sort(s.begin(), s.end());
    const double med = s[s.size() / 2];
    std::printf("| %s | %.3f (%.3f) | %.1f |\n", cases[c].name.c_str(), med, s[0],
                double(n) * cases[c].bytes_per_element / med / 1e6);
  }
  return 0;
}
