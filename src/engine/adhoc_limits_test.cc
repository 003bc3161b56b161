// Ad-hoc limits in the engine, on a fake clock: exact counts per namespace, identifier and
// window, all-or-nothing requests, and every refusal.
#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

namespace tally {
namespace {

constexpr TimeUs kMinute = 60'000'000;

class AdHocLimitsTest : public ::testing::Test {
 protected:
  AdHocLimitsTest() : clock_(1000 * kMinute + 1) {
    EngineOptions o;
    o.config_toml = "";
    o.in_memory = true;
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().message();
    engine_ = std::move(*e);
  }

  static AdHocLimit limit(const std::string& id, std::int64_t n, std::int64_t cost = 1,
                          std::int64_t duration_ms = 60'000, const std::string& ns = "sms") {
    return AdHocLimit{ns, id, n, duration_ms, cost};
  }

  AdHocResult one(const AdHocLimit& l) {
    auto r = engine_->limit_adhoc({l});
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return r.has_value() ? (*r)[0] : AdHocResult{};
  }

  FakeClock clock_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(AdHocLimitsTest, CountsExactlyPerIdentifierAndWindow) {
  for (int i = 0; i < 3; ++i) {
    const AdHocResult r = one(limit("u1", 3));
    EXPECT_TRUE(r.allowed) << i;
    EXPECT_EQ(r.remaining, 2 - i);
    EXPECT_EQ(r.used, i + 1);
    EXPECT_EQ(r.reset_us, 1001 * kMinute);
  }
  const AdHocResult denied = one(limit("u1", 3));
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.remaining, 0);
  EXPECT_EQ(denied.used, 3);
  EXPECT_TRUE(one(limit("u2", 3)).allowed) << "another identifier counts alone";
  EXPECT_TRUE(one(limit("u1", 3, 1, 60'000, "email")).allowed) << "another namespace too";
  EXPECT_TRUE(one(limit("u1", 3, 1, 3'600'000)).allowed) << "and another window length";
  EXPECT_TRUE(one(limit("u1", 3, 0)).allowed) << "a cost of 0 only asks";
  EXPECT_TRUE(one(limit("u1", 5)).allowed) << "a higher limit on the same window counts on";
  clock_.set_us(1001 * kMinute);
  const AdHocResult next = one(limit("u1", 3, 3));
  EXPECT_TRUE(next.allowed) << "a new window";
  EXPECT_EQ(next.remaining, 0);
}

TEST_F(AdHocLimitsTest, SeveralLimitsAreAllOrNothing) {
  ASSERT_TRUE(one(limit("b", 2)).allowed);
  auto r = engine_->limit_adhoc({limit("a", 5), limit("b", 2, 2)});
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE((*r)[0].allowed) << "it fits by itself";
  EXPECT_FALSE((*r)[1].allowed);
  EXPECT_EQ((*r)[0].remaining, 5) << "but nothing counted";
  EXPECT_EQ(one(limit("a", 5, 0)).used, 0);
  r = engine_->limit_adhoc({limit("a", 5, 2), limit("a", 5, 3)});
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE((*r)[0].allowed && (*r)[1].allowed) << "the same window twice counts twice";
  EXPECT_EQ((*r)[1].used, 5);
}

TEST_F(AdHocLimitsTest, RefusalsNameTheFieldAndCountNothing) {
  auto code = [&](std::vector<AdHocLimit> ls) {
    auto r = engine_->limit_adhoc(ls);
    return r.has_value() ? StatusCode::kOk : r.error().code();
  };
  EXPECT_EQ(code({}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(std::vector<AdHocLimit>(101, limit("x", 1))), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({limit("", 1)}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({limit(std::string(256, 'x'), 1)}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({limit("a\nb", 1)}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({limit("x", -1)}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({limit("x", 1, -1)}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({limit("x", 1, 1, 999)}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({limit("x", 1, 1, 2'592'000'001)}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({limit("x", 1, 1, 60'000, "")}), StatusCode::kInvalidArgument);
  auto named = engine_->limit_adhoc({limit("ok", 1), limit("x", 1, 1, 5)});
  ASSERT_FALSE(named.has_value());
  EXPECT_NE(named.error().message().find("limits[1].duration"), std::string::npos)
      << named.error().message();
  EXPECT_EQ(one(limit("ok", 1, 0)).used, 0) << "a refused request counts nothing";
}

}  // namespace
}  // namespace tally
