# Browser and dashboard tests (issue 10): the web UI in Debian's chromium driven by playwright-core
# (tests/browser/node_modules, from package-lock.json via scripts/install-deps.sh), and the Grafana
# dashboards' queries against a live aggregator.
corral_test(test_ui SOURCES browser/test_ui.c LIBS itest LABELS integration browser TIMEOUT 180)
add_dependencies(test_ui corral-agent corral-aggregator corral-load corral-ui)
corral_test(test_grafana SOURCES browser/test_grafana.c LIBS itest LABELS integration TIMEOUT 120)
add_dependencies(test_grafana corral-aggregator)
corral_test(test_ui_static SOURCES browser/test_ui_static.c LIBS itest LABELS integration)
add_dependencies(test_ui_static corral-aggregator corral-ui)
