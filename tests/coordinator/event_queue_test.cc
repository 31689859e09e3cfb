#include "coordinator/event_queue.h"

#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace facet {
namespace {

using ::testing::ElementsAre;

TokenEvent Event(std::vector<int32_t> ids, std::string text, int64_t completion) {
  TokenEvent e;
  e.ids = std::move(ids);
  e.text = std::move(text);
  e.prompt_tokens = 3;
  e.completion_tokens = completion;
  return e;
}

TEST(EventQueue, TimesOutWhenEmpty) {
  EventQueue q;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(q.PopFor(std::chrono::milliseconds(30)).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(30));
}

TEST(EventQueue, MergesBacklogIntoOneEventKeepingTheFinish) {
  EventQueue q;
  q.Push(Event({5}, "a", 1));
  q.Push(Event({6, 7}, "bc", 3));
  TokenEvent last = Event({8}, "", 4);
  last.finished = true;
  last.finish = EngineFinish::kStop;
  q.Push(last);
  auto e = q.PopFor(std::chrono::milliseconds(0));
  ASSERT_TRUE(e.has_value());
  EXPECT_THAT(e->ids, ElementsAre(5, 6, 7, 8));
  EXPECT_EQ(e->text, "abc");
  EXPECT_TRUE(e->finished);
  EXPECT_EQ(e->finish, EngineFinish::kStop);
  EXPECT_EQ(e->completion_tokens, 4);
  EXPECT_EQ(e->prompt_tokens, 3);
  EXPECT_FALSE(q.PopFor(std::chrono::milliseconds(0)).has_value());
}

TEST(EventQueue, WakesAWaitingReader) {
  EventQueue q;
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    q.Push(Event({9}, "x", 1));
  });
  auto e = q.PopFor(std::chrono::seconds(10));
  producer.join();
  ASSERT_TRUE(e.has_value());
  EXPECT_THAT(e->ids, ElementsAre(9));
}

}  // namespace
}  // namespace facet
