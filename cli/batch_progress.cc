#include "cli/batch_progress.h"

#include <cmath>
#include <cstdio>

namespace facet::cli {

std::string FormatDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600) snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
  else if (t >= 60) snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else snprintf(buf, sizeof(buf), "%llds", (long long)t);
  return buf;
}

BatchProgress::BatchProgress(int64_t total, bool terminal, double interval_s, std::string prefix,
                             std::ostream& out)
    : total_(total),
      terminal_(terminal),
      interval_(interval_s),
      prefix_(std::move(prefix)),
      out_(out),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

double BatchProgress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string BatchProgress::Line(const BatchCounts& c) const {
  const double t = elapsed_s();
  const double tok_s = t > 0 ? c.completion_tokens / t : 0;
  const double eta = c.done > 0 ? t / c.done * (total_ - c.done) : NAN;
  char buf[256];
  if (terminal_) {
    constexpr int kWidth = 24;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * c.done / total_) : kWidth;
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    snprintf(buf, sizeof(buf), "[%s] %lld/%lld requests, %lld failed, %.1f tok/s, ETA %s",
             bar.c_str(), (long long)c.done, (long long)total_, (long long)c.failed, tok_s,
             FormatDuration(eta).c_str());
  } else {
    snprintf(buf, sizeof(buf), "progress: %lld/%lld requests, %lld failed, %.1f tok/s, elapsed %s, ETA %s",
             (long long)c.done, (long long)total_, (long long)c.failed, tok_s,
             FormatDuration(t).c_str(), FormatDuration(eta).c_str());
  }
  return prefix_ + buf;
}

void BatchProgress::Update(const BatchCounts& c) {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < interval_) return;
  last_ = now;
  if (terminal_) out_ << "\r\033[K" << Line(c) << std::flush;
  else out_ << Line(c) << std::endl;
}

void BatchProgress::Finish(const BatchCounts& c, int64_t skipped) { Finish(c, skipped, elapsed_s()); }

void BatchProgress::Finish(const BatchCounts& c, int64_t skipped, double t) {
  if (terminal_) out_ << "\r\033[K";
  char buf[384];
  snprintf(buf, sizeof(buf),
           "done: %lld requests (%lld failed, %lld already done and skipped) in %.1f s; "
           "%lld prompt + %lld completion tokens; %.2f requests/s, %.1f completion tok/s",
           (long long)c.done, (long long)c.failed, (long long)skipped, t, (long long)c.prompt_tokens,
           (long long)c.completion_tokens, t > 0 ? c.done / t : 0.0,
           t > 0 ? c.completion_tokens / t : 0.0);
  out_ << prefix_ << buf << std::endl;
}

}  // namespace facet::cli
