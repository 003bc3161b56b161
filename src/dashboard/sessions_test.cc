#include "dashboard/sessions.h"

#include <set>

#include <gtest/gtest.h>

namespace tally::dashboard {
namespace {

constexpr std::int64_t kSecond = 1'000'000;

TEST(SessionStore, CreatesRandomTokensAndFindsThem) {
  FakeClock clock(1'700'000'000 * kSecond);
  SessionStore store(clock, 60 * kSecond, 100);
  auto a = store.create("key_a");
  auto b = store.create("key_a");
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(a->token.size(), 64u);
  EXPECT_EQ(a->csrf_token.size(), 64u);
  EXPECT_NE(a->token, b->token);
  EXPECT_NE(a->csrf_token, b->csrf_token);
  EXPECT_NE(a->token, a->csrf_token);
  EXPECT_EQ(a->expires_at_us, clock.now_us() + 60 * kSecond);
  auto s = store.find(a->token);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->key_id, "key_a");
  EXPECT_EQ(s->csrf_token, a->csrf_token);
  EXPECT_FALSE(store.find("").has_value());
  EXPECT_FALSE(store.find(a->csrf_token).has_value()) << "the CSRF token is no session token";
  EXPECT_FALSE(store.find(std::string(65, 'a')).has_value());
}

TEST(SessionStore, ExpiresAfterItsLifetime) {
  FakeClock clock(1'700'000'000 * kSecond);
  SessionStore store(clock, 60 * kSecond, 100);
  auto a = store.create("key_a");
  ASSERT_TRUE(a.has_value());
  clock.advance_us(60 * kSecond - 1);
  EXPECT_TRUE(store.find(a->token).has_value());
  clock.advance_us(1);
  EXPECT_FALSE(store.find(a->token).has_value());
  EXPECT_EQ(store.size(), 0u) << "an expired session found is dropped";
}

TEST(SessionStore, EndsOneOrEveryOneOfAKey) {
  FakeClock clock(1'700'000'000 * kSecond);
  SessionStore store(clock, 60 * kSecond, 100);
  auto a1 = store.create("key_a");
  auto a2 = store.create("key_a");
  auto b = store.create("key_b");
  EXPECT_TRUE(store.end(a1->token));
  EXPECT_FALSE(store.end(a1->token));
  EXPECT_FALSE(store.find(a1->token).has_value());
  EXPECT_TRUE(store.find(a2->token).has_value());
  EXPECT_EQ(store.end_key("key_a"), 1u);
  EXPECT_FALSE(store.find(a2->token).has_value());
  EXPECT_TRUE(store.find(b->token).has_value());
  EXPECT_EQ(store.end_key("key_a"), 0u);
}

TEST(SessionStore, BoundsSessionsPerKeyAndInAll) {
  FakeClock clock(1'700'000'000 * kSecond);
  SessionStore store(clock, 60 * kSecond, kSessionsPerKeyMax + 2);
  std::vector<NewSession> of_a;
  for (std::size_t i = 0; i < kSessionsPerKeyMax + 1; ++i) {
    auto s = store.create("key_a");
    ASSERT_TRUE(s.has_value());
    of_a.push_back(*s);
  }
  // The key's oldest made room for its newest.
  EXPECT_FALSE(store.find(of_a.front().token).has_value());
  EXPECT_TRUE(store.find(of_a[1].token).has_value());
  EXPECT_TRUE(store.find(of_a.back().token).has_value());
  EXPECT_EQ(store.size(), kSessionsPerKeyMax);
  ASSERT_TRUE(store.create("key_b").has_value());
  ASSERT_TRUE(store.create("key_c").has_value());
  auto full = store.create("key_d");
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(store.size(), kSessionsPerKeyMax + 2);
  // Once they expire, there is room again.
  clock.advance_us(60 * kSecond);
  EXPECT_TRUE(store.create("key_d").has_value());
  EXPECT_EQ(store.size(), 1u);
}

}  // namespace
}  // namespace tally::dashboard
