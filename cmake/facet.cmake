# facet_library(NAME SRCS a.cc b.cc DEPS x y TESTS t1_test.cc ...)
#
# Declares a static library target `NAME` and, when tests are enabled, one
# test executable `NAME_tests` built from TESTS and registered with ctest.
# DEPS are PUBLIC link dependencies: layering is enforced because a target can
# only include headers of what it links, and the top-level CMakeLists adds
# lower layers first, so an upward dependency fails at configure time.
function(facet_library name)
  cmake_parse_arguments(ARG "" "LABEL" "SRCS;DEPS;TESTS;TEST_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(${name} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  if(FACET_BUILD_TESTS AND ARG_TESTS)
    facet_test(${name}_tests SRCS ${ARG_TESTS} DEPS ${name} ${ARG_TEST_DEPS} LABEL "${ARG_LABEL}")
  endif()
endfunction()

# facet_test(NAME SRCS ... DEPS ... [LABEL l]) — one gtest binary, discovered by ctest.
function(facet_test name)
  cmake_parse_arguments(ARG "" "LABEL" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${name} PRIVATE
    FACET_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    FACET_SHARED_DIR="${PROJECT_SOURCE_DIR}/../shared")
  set(labels unit)
  if(ARG_LABEL)
    set(labels ${ARG_LABEL})
  endif()
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${labels}"
    DISCOVERY_TIMEOUT 60)
endfunction()
