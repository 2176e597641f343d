# tests/faults/ -- fault scenarios of issue 11: each one runs the real daemons, injects the fault and
# checks what is promised (nothing acknowledged lost, nothing duplicated, bounded memory, service resumes).
# Elsewhere: test_logs_agent (aggregator and agent killed mid-stream, every log line once) and
# test_multinode (a node's agent dies) in integration/.

corral_test(test_clock_jump SOURCES faults/test_clock_jump.c LIBS itest LABELS faults TIMEOUT 120)
add_dependencies(test_clock_jump corral-agent corral-aggregator)
corral_test(test_agg_outage SOURCES faults/test_agg_outage.c LIBS itest LABELS faults TIMEOUT 180)
add_dependencies(test_agg_outage corral-agent corral-aggregator)
corral_test(test_cgroup_churn SOURCES faults/test_cgroup_churn.c LIBS itest LABELS faults TIMEOUT 120)
add_dependencies(test_cgroup_churn corral-agent corral-aggregator)
corral_test(test_crash SOURCES faults/test_crash.c LIBS itest LABELS faults TIMEOUT 300)
add_dependencies(test_crash corral-aggregator)
corral_test(test_ts_crash SOURCES faults/test_ts_crash.c LIBS itest ts LABELS faults TIMEOUT 120)
corral_test(test_ts_diskfull SOURCES faults/test_ts_diskfull.c LIBS itest LABELS faults TIMEOUT 120)
add_dependencies(test_ts_diskfull corral-aggregator)
corral_test(test_agent_retry SOURCES faults/test_agent_retry.c LIBS itest LABELS faults)
add_dependencies(test_agent_retry corral-agent corral-aggregator)
