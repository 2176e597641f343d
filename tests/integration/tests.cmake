# Integration tests: real binaries on loopback (and real cgroups), built against itest.c.
add_library(itest STATIC integration/itest.c)
target_include_directories(itest PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/integration)
target_link_libraries(itest PUBLIC cm PkgConfig::CURL PkgConfig::JANSSON)

add_executable(corral-load tools/corral-load.c)
set_target_properties(corral-load PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CORRAL_TEST_DIR})

corral_test(test_push_query SOURCES integration/test_push_query.c LIBS itest LABELS integration TIMEOUT 180)
corral_test(test_push_reject SOURCES integration/test_push_reject.c LIBS itest PkgConfig::ZSTD LABELS integration)
corral_test(test_crash SOURCES integration/test_crash.c LIBS itest LABELS integration TIMEOUT 300)
add_dependencies(test_push_query corral-agent corral-aggregator corralctl corral-load)
add_dependencies(test_push_reject corral-aggregator)
add_dependencies(test_crash corral-aggregator)
corral_test(test_agent_retry SOURCES integration/test_agent_retry.c LIBS itest LABELS integration)
add_dependencies(test_agent_retry corral-agent corral-aggregator)
corral_test(test_agent_cgroups SOURCES integration/test_agent_cgroups.c LIBS itest LABELS integration TIMEOUT 120)
add_dependencies(test_agent_cgroups corral-agent)
