// The Prometheus text format of MetricsRegistry: HELP/TYPE lines, escaped
// label values, cumulative histogram buckets with sum and count.
#include "coordinator/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace facet {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, CounterRendersLabelsAndMoves) {
  MetricsRegistry m;
  Counter& c = m.AddCounter("x_total", "Things", {"endpoint", "status"});
  EXPECT_THAT(m.Render(), Not(HasSubstr("x_total{")));  // no sample before the first Inc
  c.Inc({"/a", "200"});
  c.Inc({"/a", "200"}, 2.5);
  c.Inc({"/a", "200"}, -1);  // ignored: counters never go down
  c.Inc({"/b\"\n\\", "404"});
  EXPECT_DOUBLE_EQ(c.Value({"/a", "200"}), 3.5);
  const std::string text = m.Render();
  EXPECT_THAT(text, HasSubstr("# HELP x_total Things\n# TYPE x_total counter\n"));
  EXPECT_THAT(text, HasSubstr("x_total{endpoint=\"/a\",status=\"200\"} 3.5\n"));
  EXPECT_THAT(text, HasSubstr("x_total{endpoint=\"/b\\\"\\n\\\\\",status=\"404\"} 1\n"));
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  MetricsRegistry m;
  Histogram& h = m.AddHistogram("lat_seconds", "Latency", {"model"}, {0.1, 1});
  h.Observe({"m"}, 0.05);
  h.Observe({"m"}, 0.1);  // on the bound: counts in le="0.1"
  h.Observe({"m"}, 0.5);
  h.Observe({"m"}, 7);
  EXPECT_EQ(h.Count({"m"}), 4u);
  const std::string text = m.Render();
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{model=\"m\",le=\"0.1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{model=\"m\",le=\"1\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_sum{model=\"m\"} 7.65\n"));
  EXPECT_THAT(text, HasSubstr("lat_seconds_count{model=\"m\"} 4\n"));
}

TEST(MetricsTest, CollectedValuesAreReadAtScrapeTime) {
  MetricsRegistry m;
  double value = 1;
  m.AddGauge("g", "A gauge", {}, [&](std::vector<std::pair<LabelValues, double>>* out) {
    out->push_back({{}, value});
  });
  m.AddGauge("steps_total", "Steps", {"pool"}, [&](std::vector<std::pair<LabelValues, double>>* out) {
    out->push_back({{"global"}, 2 * value});
  }, "counter");
  EXPECT_THAT(m.Render(), HasSubstr("g 1\n"));
  value = 21;
  const std::string text = m.Render();
  EXPECT_THAT(text, HasSubstr("g 21\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE steps_total counter\nsteps_total{pool=\"global\"} 42\n"));
}

}  // namespace
}  // namespace facet
