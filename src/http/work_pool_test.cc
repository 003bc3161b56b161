// Tests of the work pool: its bound, continuations past it, and stopping.
#include "http/work_pool.h"

#include <atomic>
#include <future>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

namespace tally::http {
namespace {

// Holds the pool's one thread until released.
struct Latch {
  std::promise<void> started;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
};

TEST(WorkPoolTest, RunsTasksOnItsThreads) {
  WorkPool pool(2, 8);
  std::atomic<int> ran{0};
  std::promise<void> done;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(pool.try_submit([&] {
      if (++ran == 5) {
        done.set_value();
      }
    }));
  }
  done.get_future().wait();
  EXPECT_EQ(ran.load(), 5);
}

TEST(WorkPoolTest, RefusesNewTasksBeyondTheQueueBoundButNotContinuations) {
  WorkPool pool(1, 2);
  Latch latch;
  ASSERT_TRUE(pool.try_submit([&] {
    latch.started.set_value();
    latch.released.wait();
  }));
  latch.started.get_future().wait();  // the thread is busy; the queue is empty
  std::atomic<int> ran{0};
  EXPECT_TRUE(pool.try_submit([&] { ++ran; }));
  EXPECT_TRUE(pool.try_submit([&] { ++ran; }));
  EXPECT_FALSE(pool.try_submit([&] { ++ran; })) << "two wait already";
  EXPECT_TRUE(pool.submit_continuation([&] { ++ran; })) << "work under way is never refused";
  WorkPoolStats s = pool.stats();
  EXPECT_EQ(s.queued, 3u);
  EXPECT_EQ(s.running, 1u);
  EXPECT_EQ(s.rejected, 1u);

  latch.release.set_value();
  while (pool.stats().queued > 0 || pool.stats().running > 0) {
    std::this_thread::yield();
  }
  EXPECT_EQ(ran.load(), 3);
  EXPECT_TRUE(pool.try_submit([&] { ++ran; })) << "room again";
}

TEST(WorkPoolTest, StopFinishesRunningTasksAndDropsWaitingOnes) {
  auto pool = std::make_unique<WorkPool>(1, 8);
  Latch latch;
  std::atomic<bool> finished{false};
  ASSERT_TRUE(pool->try_submit([&] {
    latch.started.set_value();
    latch.released.wait();
    finished = true;
  }));
  latch.started.get_future().wait();
  // A waiting task owns something that notices when it is destroyed without running.
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> watch = token;
  std::atomic<bool> ran_waiting{false};
  ASSERT_TRUE(pool->try_submit([&ran_waiting, token] { ran_waiting = true; }));
  token.reset();
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    latch.release.set_value();
  });
  pool->stop();
  releaser.join();
  EXPECT_TRUE(finished.load()) << "stop() waits for the running task";
  EXPECT_FALSE(ran_waiting.load());
  EXPECT_TRUE(watch.expired()) << "the waiting task was destroyed";
  EXPECT_FALSE(pool->try_submit([] {}));
  EXPECT_FALSE(pool->submit_continuation([] {}));
  pool->stop();  // idempotent
}

}  // namespace
}  // namespace tally::http
