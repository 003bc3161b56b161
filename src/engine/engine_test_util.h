// Engine tests on disk: a fixture with a fresh temporary data directory and a fake clock.
#pragma once

#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

namespace tally {

class EngineDirTest : public ::testing::Test {
 protected:
  // `prefix` names the directory ("tally-wallet-1234"); the clock starts at `start_us`.
  EngineDirTest(const char* prefix, TimeUs start_us) : prefix_(prefix), clock_(start_us) {}

  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / (prefix_ + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir_);
  }

  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The engine's data directory, inside dir_ (which tests may use for other files).
  std::string data_dir() const { return (dir_ / "data").string(); }

  // Opens (or reopens) the engine of data_dir() with `config`.
  std::unique_ptr<Engine> open_engine(const std::string& config) {
    EngineOptions o;
    o.config_toml = config;
    o.data_dir = data_dir();
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().message();
    return e ? std::move(*e) : nullptr;
  }

  std::string prefix_;
  std::filesystem::path dir_;
  FakeClock clock_;
};

}  // namespace tally
