/* cm_regex.c -- a guard in front of glibc's regcomp for regular expressions that come from users.
 *
 * PromQL and LogQL matchers compile user patterns with POSIX regcomp. Some patterns make glibc's
 * compiler or matcher blow up (found by fuzzing the LogQL parser: one input took 24 GB). Both query
 * languages call cm_regex_safe first and refuse what it refuses, with a message, before regcomp.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "cm.h"

/* glibc's regcomp copies a subtree for every stacked or counted repetition, so "a++++..." or
 * "((a{9}){9}){9}" or "(((a)+)+)+..." take exponential memory, and back-references exponential time.
 * Like RE2, refuse back-references and a quantifier that follows another one; refuse empty groups; bound
 * the length, and the product of all counts and of 4 per quantified group at 1000 (whether nested or not:
 * simple and safe; so at most four quantified groups). */
int cm_regex_safe(const char *p)
{
	int prev_quant = 0;
	long product = 1;
	if (strlen(p) > 4096)
		return 0;
	for (; *p; p++) {
		if (*p == '\\' && p[1] >= '1' && p[1] <= '9')
			return 0; /* a back-reference: exponential matching in glibc, and RE2 has none */
		if (*p == '\\' && p[1]) {
			p++, prev_quant = 0;
			continue;
		}
		int quant = *p == '*' || *p == '+' || *p == '?' || *p == '{';
		if (quant && prev_quant)
			return 0;
		if (*p == '(' && p[1] == ')')
			return 0; /* an empty group: epsilon loops when quantified */
		if (quant && p[-1] == ')' && (product *= 4) > 1000)
			return 0; /* (x)+ is copied as (x)(x)*, and closures of nested groups grow fast */
		if (*p == '{') {
			char *end;
			long lo = strtol(p + 1, &end, 10), hi = lo;
			if (*end == ',')
				hi = end[1] == '}' ? lo : strtol(end + 1, &end, 10);
			long n = hi > lo ? hi : lo;
			if (n < 0 || n > 1000 || (product *= n > 1 ? n : 1) > 1000)
				return 0;
			p = strchr(p, '}') ? strchr(p, '}') : p;
		}
		prev_quant = quant;
	}
	return 1;
}
