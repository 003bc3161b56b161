// Which arguments the client routes by: command_keys() for each shape of command.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "redis/cluster_client.h"

namespace tally::redis {
namespace {

std::vector<std::size_t> keys_of(const std::vector<std::string>& argv) {
  auto keys = command_keys(argv);
  EXPECT_TRUE(keys.has_value()) << argv[0] << ": " << keys.error().to_string();
  return keys ? *keys : std::vector<std::size_t>{};
}

using Positions = std::vector<std::size_t>;

TEST(CommandKeys, FirstArgumentByDefault) {
  EXPECT_EQ(keys_of({"GET", "k"}), Positions{1});
  EXPECT_EQ(keys_of({"set", "k", "v", "EX", "10"}), Positions{1});
  EXPECT_EQ(keys_of({"HINCRBY", "h", "f", "1"}), Positions{1});
}

TEST(CommandKeys, EveryArgumentOrEveryOther) {
  EXPECT_EQ(keys_of({"MGET", "a", "b", "c"}), (Positions{1, 2, 3}));
  EXPECT_EQ(keys_of({"del", "a", "b"}), (Positions{1, 2}));
  EXPECT_EQ(keys_of({"MSET", "a", "1", "b", "2"}), (Positions{1, 3}));
  EXPECT_EQ(keys_of({"MSETNX", "a", "1"}), Positions{1});
}

TEST(CommandKeys, ScriptsAndFunctionsCountTheirKeys) {
  EXPECT_EQ(keys_of({"FCALL", "f", "2", "a", "b", "arg"}), (Positions{3, 4}));
  EXPECT_EQ(keys_of({"fcall_ro", "f", "0", "arg"}), Positions{});
  EXPECT_EQ(keys_of({"EVALSHA", "abc", "1", "k"}), Positions{3});
  EXPECT_EQ(keys_of({"EVAL", "return 1", "0"}), Positions{});
}

TEST(CommandKeys, ServerCommandsHaveNoKey) {
  EXPECT_EQ(keys_of({"PING"}), Positions{});
  EXPECT_EQ(keys_of({"CLUSTER", "KEYSLOT", "foo"}), Positions{});
  EXPECT_EQ(keys_of({"function", "LOAD", "#!lua name=x"}), Positions{});
  EXPECT_EQ(keys_of({"SCRIPT", "LOAD", "return 1"}), Positions{});
}

TEST(CommandKeys, MalformedCommandsAreErrors) {
  for (const std::vector<std::string>& argv :
       std::vector<std::vector<std::string>>{{},
                                             {"FCALL", "f"},
                                             {"FCALL", "f", "x"},
                                             {"FCALL", "f", "2", "only"},
                                             {"EVAL", "s", "-1"},
                                             {"EVALSHA", "s", "1 "},
                                             {"EVAL", "s", "99999999999999999999999"}}) {
    auto keys = command_keys(argv);
    ASSERT_FALSE(keys.has_value()) << (argv.empty() ? "(empty)" : argv[0]);
    EXPECT_EQ(keys.error().code(), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace tally::redis
