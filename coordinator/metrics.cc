#include "coordinator/metrics.h"

#include <cmath>
#include <cstdio>

#include "core/logging.h"

namespace facet {
namespace {

// Shortest text that reads back as the same double; Prometheus spells infinities +Inf/-Inf.
std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[40];
  snprintf(buf, sizeof(buf), "%.17g", v);
  double back = 0;
  for (int precision = 6; precision < 17; ++precision) {
    char shorter[40];
    snprintf(shorter, sizeof(shorter), "%.*g", precision, v);
    if (sscanf(shorter, "%lf", &back) == 1 && back == v) return shorter;
  }
  return buf;
}

}  // namespace

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string MetricFamily::LabelText(const LabelValues& values, const std::string& extra) const {
  FACET_CHECK(values.size() == labels_.size()) << name_;
  if (values.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ",";
    out += labels_[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra.empty()) out += (values.empty() ? "" : ",") + extra;
  return out + "}";
}

void MetricFamily::Render(std::string* out) const {
  *out += "# HELP " + name_ + " " + help_ + "\n# TYPE " + name_ + " " + type_ + "\n";
  RenderSamples(out);
}

void Counter::Inc(const LabelValues& values, double by) {
  FACET_CHECK(values.size() == labels_.size()) << name_;
  if (!(by >= 0)) return;  // counters never go down (NaN too is dropped)
  std::lock_guard<std::mutex> lock(mu_);
  values_[values] += by;
}

double Counter::Value(const LabelValues& values) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(values);
  return it == values_.end() ? 0 : it->second;
}

void Counter::RenderSamples(std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, v] : values_) *out += name_ + LabelText(values) + " " + Number(v) + "\n";
}

void Gauge::RenderSamples(std::string* out) const {
  std::vector<std::pair<LabelValues, double>> samples;
  collect_(&samples);
  for (const auto& [values, v] : samples) *out += name_ + LabelText(values) + " " + Number(v) + "\n";
}

void Histogram::Observe(const LabelValues& values, double v) {
  FACET_CHECK(values.size() == labels_.size()) << name_;
  if (std::isnan(v)) return;
  std::lock_guard<std::mutex> lock(mu_);
  Series& s = series_[values];
  if (s.buckets.empty()) s.buckets.assign(bounds_.size() + 1, 0);
  size_t b = 0;
  while (b < bounds_.size() && v > bounds_[b]) ++b;
  s.buckets[b]++;
  s.sum += v;
  s.count++;
}

uint64_t Histogram::Count(const LabelValues& values) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(values);
  return it == series_.end() ? 0 : it->second.count;
}

void Histogram::RenderSamples(std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, s] : series_) {
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= bounds_.size(); ++b) {
      cumulative += s.buckets[b];
      const std::string le = b < bounds_.size() ? Number(bounds_[b]) : "+Inf";
      *out += name_ + "_bucket" + LabelText(values, "le=\"" + le + "\"") + " " +
              std::to_string(cumulative) + "\n";
    }
    *out += name_ + "_sum" + LabelText(values) + " " + Number(s.sum) + "\n";
    *out += name_ + "_count" + LabelText(values) + " " + std::to_string(s.count) + "\n";
  }
}

Counter& MetricsRegistry::AddCounter(std::string name, std::string help,
                                     std::vector<std::string> labels) {
  auto c = std::make_unique<Counter>(std::move(name), std::move(help), std::move(labels));
  Counter& ref = *c;
  families_.push_back(std::move(c));
  return ref;
}

Gauge& MetricsRegistry::AddGauge(std::string name, std::string help, std::vector<std::string> labels,
                                 Gauge::Collect collect, std::string type) {
  auto g = std::make_unique<Gauge>(std::move(name), std::move(help), std::move(labels),
                                   std::move(collect), std::move(type));
  Gauge& ref = *g;
  families_.push_back(std::move(g));
  return ref;
}

Histogram& MetricsRegistry::AddHistogram(std::string name, std::string help,
                                         std::vector<std::string> labels,
                                         std::vector<double> bounds) {
  auto h = std::make_unique<Histogram>(std::move(name), std::move(help), std::move(labels),
                                       std::move(bounds));
  Histogram& ref = *h;
  families_.push_back(std::move(h));
  return ref;
}

std::string MetricsRegistry::Render() const {
  std::string out;
  for (const auto& f : families_) f->Render(&out);
  return out;
}

}  // namespace facet
