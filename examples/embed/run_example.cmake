# Runs tally_embed_example on a fresh data directory and checks its exit code and output:
# five checks allowed with the remaining count going 4..0, the sixth denied for the limit,
# the reservation committed, and the usage it reports.
#   cmake -DEXAMPLE=<binary> -DDATA_DIR=<dir> -P run_example.cmake
file(REMOVE_RECURSE "${DATA_DIR}")
execute_process(COMMAND "${EXAMPLE}" "${DATA_DIR}"
  RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
message("${out}${err}")
if(NOT code EQUAL 0)
  message(FATAL_ERROR "tally_embed_example exited with ${code}")
endif()
foreach(expected
    "check 1: allowed, used 1 of 5, remaining 4 \\(api_calls per day\\)"
    "check 5: allowed, used 5 of 5, remaining 0"
    "check 6: denied \\(limit_exceeded\\)"
    "reservation [^ ]+: held 2000 tokens, committed 1234"
    "ingest: 1 accepted, 0 duplicate, 0 rejected"
    "usage this month: api_calls = 5\n"
    "usage this month: tokens = 1334\n"
    "result: 5 checks allowed, then denied")
  if(NOT out MATCHES "${expected}")
    message(FATAL_ERROR "output lacks /${expected}/")
  endif()
endforeach()
if(out MATCHES "check 7:")
  message(FATAL_ERROR "the example went on checking after a denial")
endif()
# A second run on the same directory finds the quota spent and the ingested event stored: the
# state survived the restart. Its checks 1-5 reuse the first run's event ids, so they answer
# their original decision (replayed, nothing consumed); check 6 is denied.
execute_process(COMMAND "${EXAMPLE}" "${DATA_DIR}"
  RESULT_VARIABLE code2 OUTPUT_VARIABLE out2 ERROR_VARIABLE err2 TIMEOUT 60)
message("${out2}${err2}")
if(NOT out2 MATCHES "customer acme exists already"
   OR NOT out2 MATCHES "check 1: replayed: allowed before, nothing consumed"
   OR NOT out2 MATCHES "check 6: denied \\(limit_exceeded\\)"
   OR NOT out2 MATCHES "ingest: 0 accepted, 1 duplicate"
   OR NOT out2 MATCHES "usage this month: api_calls = 5\n"
   OR NOT out2 MATCHES "result: the day's quota was spent by an earlier run"
   OR NOT code2 EQUAL 1)
  message(FATAL_ERROR "a second run should find the day's quota spent and the event stored "
                      "(exit 1), got exit ${code2}")
endif()
file(REMOVE_RECURSE "${DATA_DIR}")
