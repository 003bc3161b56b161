# Proves that the public headers stand by themselves: builds tally_embed_public_check (the
# example's main.cc) from scratch and checks that its compile command names no include
# directory but include/, then runs the program once to see that it linked.
#   cmake -DBUILD_DIR=<build> -DTARGET=<target> -DOBJECTS=<its objects> -DPROGRAM=<its file>
#         -DINCLUDE_DIR=<include> -P check_public_headers.cmake
foreach(object ${OBJECTS})
  file(REMOVE "${object}")
endforeach()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}" --verbose
  RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 540)
if(NOT code EQUAL 0)
  message("${out}${err}")
  message(FATAL_ERROR "${TARGET} does not build against include/ alone (exit ${code})")
endif()

# The command that compiled main.cc, and every include directory it names.
string(REPLACE "\n" ";" lines "${out}")
set(compile "")
foreach(line ${lines})
  if(line MATCHES " -c " AND line MATCHES "examples/embed/main\\.cc")
    set(compile "${line}")
  endif()
endforeach()
if(compile STREQUAL "")
  message("${out}${err}")
  message(FATAL_ERROR "the build did not compile examples/embed/main.cc")
endif()
string(REGEX MATCHALL "(-I|-isystem|-iquote|-idirafter) ?[^ ]+" flags "${compile}")
set(dirs "")
foreach(flag ${flags})
  string(REGEX REPLACE "^(-I|-isystem|-iquote|-idirafter) ?" "" dir "${flag}")
  get_filename_component(dir "${dir}" ABSOLUTE BASE_DIR "${BUILD_DIR}")
  list(APPEND dirs "${dir}")
endforeach()
get_filename_component(include_dir "${INCLUDE_DIR}" ABSOLUTE)
if(NOT dirs STREQUAL include_dir)
  message(FATAL_ERROR "main.cc was compiled with the include directories [${dirs}]; "
                      "only ${include_dir} was expected:\n${compile}")
endif()

# It linked: the program runs and answers a wrong call with its usage line (exit 2).
execute_process(COMMAND "${PROGRAM}" RESULT_VARIABLE run_code OUTPUT_VARIABLE run_out
  ERROR_VARIABLE run_err TIMEOUT 60)
if(NOT run_code EQUAL 2 OR NOT run_err MATCHES "usage: .* DATA_DIR")
  message(FATAL_ERROR "${PROGRAM} without arguments: exit ${run_code}, ${run_out}${run_err}")
endif()
message("${TARGET}: compiled with -I ${include_dir} only, linked against libtally")
