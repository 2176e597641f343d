# tests/faults/ -- fault scenarios of issue 11: each one runs the real daemons, injects the fault and
# checks what is promised (nothing acknowledged lost, nothing duplicated, bounded memory, service resumes).
# Integration tests that cover the other scenarios: test_crash (aggregator SIGKILL under load),
# test_ts_crash, test_ts_diskfull (disk full), test_agent_retry (aggregator down, agent killed),
# test_logs_agent (both killed mid-stream), test_multinode (a node's agent dies).

corral_test(test_clock_jump SOURCES faults/test_clock_jump.c LIBS itest LABELS faults TIMEOUT 120)
add_dependencies(test_clock_jump corral-agent corral-aggregator)
corral_test(test_agg_outage SOURCES faults/test_agg_outage.c LIBS itest LABELS faults TIMEOUT 180)
add_dependencies(test_agg_outage corral-agent corral-aggregator)
corral_test(test_cgroup_churn SOURCES faults/test_cgroup_churn.c LIBS itest LABELS faults TIMEOUT 120)
add_dependencies(test_cgroup_churn corral-agent corral-aggregator)
