// Looking up the embedded assets (the table itself is generated: cmake/embed_assets.cmake).
#include "dashboard/assets.h"

namespace tally::dashboard {

const Asset* find_asset(std::string_view hashed_name) {
  for (const Asset& a : assets()) {
    if (a.name == hashed_name) {
      return &a;
    }
  }
  return nullptr;
}

}  // namespace tally::dashboard
