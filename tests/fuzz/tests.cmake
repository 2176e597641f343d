# fuzz
corral_fuzz(fuzz_wal SOURCES fuzz/fuzz_wal.c LIBS ts)
corral_fuzz(fuzz_wire SOURCES fuzz/fuzz_wire.c LIBS cm)
corral_fuzz(fuzz_promql SOURCES fuzz/fuzz_promql.c LIBS ag)
corral_fuzz(fuzz_http_request SOURCES fuzz/fuzz_http_request.c LIBS na)
corral_fuzz(fuzz_dn_packet SOURCES fuzz/fuzz_dn_packet.c LIBS dn)
corral_fuzz(fuzz_ts_block SOURCES fuzz/fuzz_ts_block.c LIBS ts)
