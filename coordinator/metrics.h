// Prometheus metrics of the serving front, rendered in the text exposition
// format (version 0.0.4): counters, gauges and histograms with labels. Small on
// purpose — a mutex per family, label values as a sorted key — because a
// scrape or an observation per token is cheap next to a model step.
//
//   MetricsRegistry m;
//   Counter& c = m.AddCounter("facet_http_requests_total", "HTTP requests", {"endpoint", "status"});
//   c.Inc({"/v1/completions", "200"});
//   std::string text = m.Render();
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace facet {

using LabelValues = std::vector<std::string>;  // one per label name, in order

class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, std::string type, std::vector<std::string> labels)
      : name_(std::move(name)), help_(std::move(help)), type_(std::move(type)),
        labels_(std::move(labels)) {}
  virtual ~MetricFamily() = default;
  void Render(std::string* out) const;

 protected:
  virtual void RenderSamples(std::string* out) const = 0;
  // `{a="x",b="y"}` (with `extra` appended, e.g. le="0.5"); "" when empty.
  std::string LabelText(const LabelValues& values, const std::string& extra = "") const;

  std::string name_, help_, type_;
  std::vector<std::string> labels_;
  mutable std::mutex mu_;
};

// Monotonic; Inc by a non-negative amount.
class Counter : public MetricFamily {
 public:
  Counter(std::string name, std::string help, std::vector<std::string> labels)
      : MetricFamily(std::move(name), std::move(help), "counter", std::move(labels)) {}
  void Inc(const LabelValues& values, double by = 1);
  double Value(const LabelValues& values) const;  // 0 when never incremented

 private:
  void RenderSamples(std::string* out) const override;
  std::map<LabelValues, double> values_;
};

// Values read at scrape time: `collect` fills (label values, value) pairs.
// `type` "gauge", or "counter" for a monotonic total kept elsewhere (an
// engine's step count).
class Gauge : public MetricFamily {
 public:
  using Collect = std::function<void(std::vector<std::pair<LabelValues, double>>*)>;
  Gauge(std::string name, std::string help, std::vector<std::string> labels, Collect collect,
        std::string type = "gauge")
      : MetricFamily(std::move(name), std::move(help), std::move(type), std::move(labels)),
        collect_(std::move(collect)) {}

 private:
  void RenderSamples(std::string* out) const override;
  Collect collect_;
};

// Cumulative buckets (upper bounds ascending; +Inf is implied), sum and count.
class Histogram : public MetricFamily {
 public:
  Histogram(std::string name, std::string help, std::vector<std::string> labels,
            std::vector<double> bounds)
      : MetricFamily(std::move(name), std::move(help), "histogram", std::move(labels)),
        bounds_(std::move(bounds)) {}
  void Observe(const LabelValues& values, double v);
  uint64_t Count(const LabelValues& values) const;

 private:
  struct Series {
    std::vector<uint64_t> buckets;  // [bounds + 1], not cumulative
    double sum = 0;
    uint64_t count = 0;
  };
  void RenderSamples(std::string* out) const override;
  std::vector<double> bounds_;
  std::map<LabelValues, Series> series_;
};

class MetricsRegistry {
 public:
  Counter& AddCounter(std::string name, std::string help, std::vector<std::string> labels);
  Gauge& AddGauge(std::string name, std::string help, std::vector<std::string> labels,
                  Gauge::Collect collect, std::string type = "gauge");
  Histogram& AddHistogram(std::string name, std::string help, std::vector<std::string> labels,
                          std::vector<double> bounds);
  // Every family in the order added: text/plain; version=0.0.4.
  std::string Render() const;

 private:
  std::vector<std::unique_ptr<MetricFamily>> families_;
};

// Escapes a label value (backslash, quote, newline) for the text format.
std::string EscapeLabelValue(const std::string& v);

}  // namespace facet
