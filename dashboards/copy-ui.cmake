# copy-ui.cmake -- cmake -DSRC=dashboards/web -DDST=<build>/ui -P copy-ui.cmake: installs the web UI's files.
# Replaces DST whole (a file deleted from src/ disappears from the build too).
# SPDX-License-Identifier: Apache-2.0
if(NOT EXISTS ${SRC}/node_modules/uplot/dist/uPlot.esm.js)
  message(FATAL_ERROR "uPlot is missing: run npm ci in ${SRC} (scripts/install-deps.sh does)")
endif()
file(REMOVE_RECURSE ${DST})
file(COPY ${SRC}/src/ DESTINATION ${DST})
file(COPY ${SRC}/node_modules/uplot/dist/uPlot.esm.js ${SRC}/node_modules/uplot/dist/uPlot.min.css
     ${SRC}/node_modules/uplot/LICENSE DESTINATION ${DST}/vendor)
