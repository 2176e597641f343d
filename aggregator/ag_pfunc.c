/* ag_pfunc.c -- PromQL's functions: the table the parser checks calls against and their evaluation.
 *
 * ag__pfunc_find gives ag_promql.c each function's argument and result types; ag__pfunc_call evaluates
 * one call at one step for ag_peval.c, with the arguments already evaluated (range vectors as windows
 * into the loaded samples). Each function follows Prometheus 2.42's promql/functions.go: rate and
 * friends extrapolate exactly as extrapolatedRate, the *_over_time functions use the same Kahan
 * summation and incremental means, math functions follow Go's math package (Max/Min propagate NaN),
 * every function drops __name__ except last_over_time, sort*, label_replace and label_join.
 * Regular expressions of label_replace are RE2 translated to POSIX ERE (ag__re2_translate).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ag_int.h"

enum {
	F_RATE, F_IRATE, F_INCREASE, F_DELTA, F_IDELTA, F_RESETS, F_CHANGES, F_DERIV, F_PREDICT_LINEAR,
	F_HOLT_WINTERS, F_AVG_OT, F_MIN_OT, F_MAX_OT, F_SUM_OT, F_COUNT_OT, F_LAST_OT, F_QUANTILE_OT,
	F_STDDEV_OT, F_STDVAR_OT, F_PRESENT_OT, F_ABSENT_OT, F_ABSENT, F_ABS, F_CEIL, F_FLOOR, F_ROUND,
	F_EXP, F_LN, F_LOG2, F_LOG10, F_SQRT, F_SGN, F_CLAMP, F_CLAMP_MIN, F_CLAMP_MAX, F_ACOS, F_ACOSH,
	F_ASIN, F_ASINH, F_ATAN, F_ATANH, F_COS, F_COSH, F_SIN, F_SINH, F_TAN, F_TANH, F_DEG, F_RAD, F_PI,
	F_TIME, F_TIMESTAMP, F_VECTOR, F_SCALAR, F_LABEL_REPLACE, F_LABEL_JOIN, F_HISTOGRAM_QUANTILE,
	F_SORT, F_SORT_DESC, F_MINUTE, F_HOUR, F_DAY_OF_MONTH, F_DAY_OF_WEEK, F_DAY_OF_YEAR,
	F_DAYS_IN_MONTH, F_MONTH, F_YEAR,
};

#define S AG_PT_SCALAR
#define V AG_PT_VECTOR
#define M AG_PT_MATRIX
#define STR AG_PT_STRING

static const ag__pfunc funcs[] = {
	{"rate", {M}, 1, 1, V, F_RATE},
	{"irate", {M}, 1, 1, V, F_IRATE},
	{"increase", {M}, 1, 1, V, F_INCREASE},
	{"delta", {M}, 1, 1, V, F_DELTA},
	{"idelta", {M}, 1, 1, V, F_IDELTA},
	{"resets", {M}, 1, 1, V, F_RESETS},
	{"changes", {M}, 1, 1, V, F_CHANGES},
	{"deriv", {M}, 1, 1, V, F_DERIV},
	{"predict_linear", {M, S}, 2, 2, V, F_PREDICT_LINEAR},
	{"holt_winters", {M, S, S}, 3, 3, V, F_HOLT_WINTERS},
	{"avg_over_time", {M}, 1, 1, V, F_AVG_OT},
	{"min_over_time", {M}, 1, 1, V, F_MIN_OT},
	{"max_over_time", {M}, 1, 1, V, F_MAX_OT},
	{"sum_over_time", {M}, 1, 1, V, F_SUM_OT},
	{"count_over_time", {M}, 1, 1, V, F_COUNT_OT},
	{"last_over_time", {M}, 1, 1, V, F_LAST_OT},
	{"quantile_over_time", {S, M}, 2, 2, V, F_QUANTILE_OT},
	{"stddev_over_time", {M}, 1, 1, V, F_STDDEV_OT},
	{"stdvar_over_time", {M}, 1, 1, V, F_STDVAR_OT},
	{"present_over_time", {M}, 1, 1, V, F_PRESENT_OT},
	{"absent_over_time", {M}, 1, 1, V, F_ABSENT_OT},
	{"absent", {V}, 1, 1, V, F_ABSENT},
	{"abs", {V}, 1, 1, V, F_ABS},
	{"ceil", {V}, 1, 1, V, F_CEIL},
	{"floor", {V}, 1, 1, V, F_FLOOR},
	{"round", {V, S}, 1, 2, V, F_ROUND},
	{"exp", {V}, 1, 1, V, F_EXP},
	{"ln", {V}, 1, 1, V, F_LN},
	{"log2", {V}, 1, 1, V, F_LOG2},
	{"log10", {V}, 1, 1, V, F_LOG10},
	{"sqrt", {V}, 1, 1, V, F_SQRT},
	{"sgn", {V}, 1, 1, V, F_SGN},
	{"clamp", {V, S, S}, 3, 3, V, F_CLAMP},
	{"clamp_min", {V, S}, 2, 2, V, F_CLAMP_MIN},
	{"clamp_max", {V, S}, 2, 2, V, F_CLAMP_MAX},
	{"acos", {V}, 1, 1, V, F_ACOS},
	{"acosh", {V}, 1, 1, V, F_ACOSH},
	{"asin", {V}, 1, 1, V, F_ASIN},
	{"asinh", {V}, 1, 1, V, F_ASINH},
	{"atan", {V}, 1, 1, V, F_ATAN},
	{"atanh", {V}, 1, 1, V, F_ATANH},
	{"cos", {V}, 1, 1, V, F_COS},
	{"cosh", {V}, 1, 1, V, F_COSH},
	{"sin", {V}, 1, 1, V, F_SIN},
	{"sinh", {V}, 1, 1, V, F_SINH},
	{"tan", {V}, 1, 1, V, F_TAN},
	{"tanh", {V}, 1, 1, V, F_TANH},
	{"deg", {V}, 1, 1, V, F_DEG},
	{"rad", {V}, 1, 1, V, F_RAD},
	{"pi", {S}, 0, 0, S, F_PI},
	{"time", {S}, 0, 0, S, F_TIME},
	{"timestamp", {V}, 1, 1, V, F_TIMESTAMP},
	{"vector", {S}, 1, 1, V, F_VECTOR},
	{"scalar", {V}, 1, 1, S, F_SCALAR},
	{"label_replace", {V, STR, STR, STR, STR}, 5, 5, V, F_LABEL_REPLACE},
	{"label_join", {V, STR, STR, STR}, 3, -1, V, F_LABEL_JOIN},
	{"histogram_quantile", {S, V}, 2, 2, V, F_HISTOGRAM_QUANTILE},
	{"sort", {V}, 1, 1, V, F_SORT},
	{"sort_desc", {V}, 1, 1, V, F_SORT_DESC},
	{"minute", {V}, 0, 1, V, F_MINUTE},
	{"hour", {V}, 0, 1, V, F_HOUR},
	{"day_of_month", {V}, 0, 1, V, F_DAY_OF_MONTH},
	{"day_of_week", {V}, 0, 1, V, F_DAY_OF_WEEK},
	{"day_of_year", {V}, 0, 1, V, F_DAY_OF_YEAR},
	{"days_in_month", {V}, 0, 1, V, F_DAYS_IN_MONTH},
	{"month", {V}, 0, 1, V, F_MONTH},
	{"year", {V}, 0, 1, V, F_YEAR},
};

#undef S
#undef V
#undef M
#undef STR

const ag__pfunc *ag__pfunc_find(const char *name)
{
	for (size_t i = 0; i < CM_ARRAY_LEN(funcs); i++)
		if (!strcmp(funcs[i].name, name))
			return &funcs[i];
	return NULL;
}

/* ---- numeric helpers (Go semantics) ------------------------------------------------------------- */

double ag__go_max(double a, double b)
{
	if (isinf(a) > 0 || isinf(b) > 0)
		return INFINITY;
	if (isnan(a) || isnan(b))
		return NAN;
	if (a == 0 && a == b)
		return signbit(a) ? b : a;
	return a > b ? a : b;
}

double ag__go_min(double a, double b)
{
	if ((isinf(a) && a < 0) || (isinf(b) && b < 0))
		return -INFINITY;
	if (isnan(a) || isnan(b))
		return NAN;
	if (a == 0 && a == b)
		return signbit(a) ? a : b;
	return a < b ? a : b;
}

static void kahan_inc(double inc, double *sum, double *c)
{
	double t = *sum + inc;
	if (fabs(*sum) >= fabs(inc))
		*c += (*sum - t) + inc;
	else
		*c += (inc - t) + *sum;
	*sum = t;
}

static int cmp_nan_first(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	if (isnan(x) || isnan(y))
		return isnan(y) - isnan(x);
	return (x > y) - (x < y);
}

double ag__pquantile(double q, double *v, size_t n)
{
	if (n == 0 || isnan(q))
		return NAN;
	if (q < 0)
		return -INFINITY;
	if (q > 1)
		return INFINITY;
	qsort(v, n, sizeof(*v), cmp_nan_first);
	double rank = q * (double)(n - 1);
	double lower = fmax(0, floor(rank)), upper = fmin((double)(n - 1), lower + 1);
	double w = rank - floor(rank);
	return v[(size_t)lower] * (1 - w) + v[(size_t)upper] * w;
}

/* ---- range-vector functions --------------------------------------------------------------------- */

/* extrapolatedRate's factor for the window of m with the extrapolation to its start of to_start. */
static double extrapolation(const ag__pxmemo *m, double to_start, int64_t range, int is_rate)
{
	double threshold = m->avg * 1.1, interval = m->sampled;
	interval += to_start < threshold ? to_start : m->avg / 2;
	interval += m->to_end < threshold ? m->to_end : m->avg / 2;
	double factor = interval / m->sampled;
	if (is_rate)
		factor /= (double)range / 1000;
	return factor;
}

double ag__pfunc_extrapolate(const ag__pwin *w, int64_t ref, int64_t range, int counter, int is_rate,
			     double result, ag__pxmemo *m)
{
	const cm_sample *s = w->s;
	size_t n = w->n;
	ag__pxmemo local = {0};
	int64_t first = s[0].t_ms - (ref - range), last = ref - s[n - 1].t_ms, span = s[n - 1].t_ms - s[0].t_ms;
	m = m ? m : &local;
	if (!m->valid || m->first != first || m->last != last || m->span != span || m->n != n) {
		*m = (ag__pxmemo){first, last, span, n, 1, (double)first / 1000, (double)last / 1000,
				  (double)span / 1000, 0, 0};
		m->avg = m->sampled / (double)(n - 1);
		m->factor = extrapolation(m, m->to_start, range, is_rate);
	}
	if (counter && result > 0 && s[0].v >= 0) {
		double to_zero = m->sampled * (s[0].v / result);
		if (to_zero < m->to_start)
			return result * extrapolation(m, to_zero, range, is_rate);
	}
	return result * m->factor;
}

static double extrapolated_rate(const ag__pwin *w, int64_t ref, int64_t range, int counter, int is_rate)
{
	const cm_sample *s = w->s;
	size_t n = w->n;
	double result = s[n - 1].v - s[0].v;
	if (counter) {
		double last = 0;
		for (size_t i = 0; i < n; i++) {
			if (s[i].v < last)
				result += last;
			last = s[i].v;
		}
	}
	return ag__pfunc_extrapolate(w, ref, range, counter, is_rate, result, NULL);
}

int ag__pfunc_counter_rate(const ag__pexpr *call)
{
	return call->func->id == F_RATE ? 2 : call->func->id == F_INCREASE ? 1 : 0;
}

static int instant_value(const ag__pwin *w, int is_rate, double *out)
{
	if (w->n < 2)
		return 0;
	cm_sample last = w->s[w->n - 1], prev = w->s[w->n - 2];
	double r = is_rate && last.v < prev.v ? last.v : last.v - prev.v;
	int64_t dt = last.t_ms - prev.t_ms;
	if (dt == 0)
		return 0;
	*out = is_rate ? r / ((double)dt / 1000) : r;
	return 1;
}

static void linear_regression(const ag__pwin *w, int64_t intercept_t, double *slope, double *intercept)
{
	double n = 0, sx = 0, cx = 0, sy = 0, cy = 0, sxy = 0, cxy = 0, sx2 = 0, cx2 = 0, init = w->s[0].v;
	int const_y = 1;
	for (size_t i = 0; i < w->n; i++) {
		double y = w->s[i].v, x = (double)(w->s[i].t_ms - intercept_t) / 1e3;
		if (const_y && i > 0 && y != init)
			const_y = 0;
		n += 1;
		kahan_inc(x, &sx, &cx);
		kahan_inc(y, &sy, &cy);
		kahan_inc(x * y, &sxy, &cxy);
		kahan_inc(x * x, &sx2, &cx2);
	}
	if (const_y) {
		*slope = isinf(init) ? NAN : 0;
		*intercept = isinf(init) ? NAN : init;
		return;
	}
	sx += cx, sy += cy, sxy += cxy, sx2 += cx2;
	double cov = sxy - sx * sy / n, var = sx2 - sx * sx / n;
	*slope = cov / var;
	*intercept = sy / n - *slope * sx / n;
}

static double holt_winters(const ag__pwin *w, double sf, double tf)
{
	double s0 = 0, s1 = w->s[0].v, b = w->s[1].v - w->s[0].v;
	for (size_t i = 1; i < w->n; i++) {
		double x = sf * w->s[i].v;
		if (i > 1)
			b = tf * (s1 - s0) + (1 - tf) * b;
		double y = (1 - sf) * (s1 + b);
		s0 = s1, s1 = x + y;
	}
	return s1;
}

static double over_time(int id, const ag__pwin *w)
{
	double a = 0, c = 0, mean = 0, cm = 0, count = 0;
	switch (id) {
	case F_SUM_OT:
		for (size_t i = 0; i < w->n; i++)
			kahan_inc(w->s[i].v, &a, &c);
		return isinf(a) ? a : a + c;
	case F_AVG_OT:
		for (size_t i = 0; i < w->n; i++) {
			double v = w->s[i].v;
			count++;
			if (isinf(mean) && ((isinf(v) && (mean > 0) == (v > 0)) || (!isinf(v) && !isnan(v))))
				continue;
			kahan_inc(v / count - mean / count, &mean, &c);
		}
		return isinf(mean) ? mean : mean + c;
	case F_STDDEV_OT:
	case F_STDVAR_OT:
		for (size_t i = 0; i < w->n; i++) {
			double v = w->s[i].v, delta = v - (mean + cm);
			count++;
			kahan_inc(delta / count, &mean, &cm);
			kahan_inc(delta * (v - (mean + cm)), &a, &c);
		}
		return id == F_STDVAR_OT ? (a + c) / count : sqrt((a + c) / count);
	case F_MIN_OT:
	case F_MAX_OT:
		a = w->s[0].v;
		for (size_t i = 0; i < w->n; i++) {
			double v = w->s[i].v;
			if ((id == F_MAX_OT ? v > a : v < a) || isnan(a))
				a = v;
		}
		return a;
	case F_COUNT_OT: return (double)w->n;
	case F_LAST_OT: return w->s[w->n - 1].v;
	case F_PRESENT_OT: return 1;
	case F_RESETS:
	case F_CHANGES:
		for (size_t i = 1; i < w->n; i++) {
			double p = w->s[i - 1].v, v = w->s[i].v;
			a += id == F_RESETS ? v < p : (v != p && !(isnan(v) && isnan(p)));
		}
		return a;
	default: return NAN;
	}
}

static const ag__pexpr *unparen(const ag__pexpr *e)
{
	while (e->kind == AG_P_PAREN)
		e = e->lhs;
	return e;
}

/* One window's value, or 0 when the function gives nothing for it; a1, a2: the scalar arguments after
 * the range vector (predict_linear, holt_winters). */
static int window_value(int id, const ag__pwin *w, int64_t ref, int64_t range, double a1, double a2, int64_t t,
			double *out)
{
	double slope, icpt;
	switch (id) {
	case F_RATE:
	case F_INCREASE:
	case F_DELTA:
		if (w->n < 2)
			return 0;
		*out = extrapolated_rate(w, ref, range, id != F_DELTA, id == F_RATE);
		return 1;
	case F_IRATE: return instant_value(w, 1, out);
	case F_IDELTA: return instant_value(w, 0, out);
	case F_DERIV:
	case F_PREDICT_LINEAR:
		if (w->n < 2)
			return 0;
		linear_regression(w, id == F_DERIV ? w->s[0].t_ms : t, &slope, &icpt);
		*out = id == F_DERIV ? slope : slope * a1 + icpt;
		return 1;
	case F_HOLT_WINTERS:
		if (w->n < 2)
			return 0;
		*out = holt_winters(w, a1, a2);
		return 1;
	default:
		*out = over_time(id, w);
		return 1;
	}
}

static const ag__pexpr *unparen_c(const ag__pexpr *e)
{
	while (e->kind == AG_P_PAREN)
		e = e->lhs;
	return e;
}

int ag__pfunc_streamable(const ag__pexpr *call)
{
	int id = call->func->id;
	if (id > F_ABSENT_OT || id == F_ABSENT_OT || id == F_QUANTILE_OT || id == F_HOLT_WINTERS)
		return 0;
	const ag__pexpr *m = unparen_c(call->args[0]);
	if (m->kind != AG_P_SEL || m->type != AG_PT_MATRIX)
		return 0;
	return id != F_PREDICT_LINEAR || unparen_c(call->args[1])->kind == AG_P_NUM;
}

int ag__pfunc_window(const ag__pexpr *call, const ag__pwin *w, int64_t ref, int64_t t, double *out)
{
	const ag__pexpr *m = unparen_c(call->args[0]);
	double a1 = call->nargs > 1 ? unparen_c(call->args[1])->num : 0;
	return window_value(call->func->id, w, ref, m->range, a1, 0, t, out);
}

static const ag__pls *absent_labels(ag__pctx *c, const ag__pexpr *arg)
{
	cm_label tmp[64];
	size_t n = 0;
	if (arg->kind == AG_P_SEL) {
		const ag__selector *sel = &arg->sel;
		for (size_t i = 0; i < sel->nmatchers && n < 64; i++) {
			const ts_matcher *m = &sel->matchers[i];
			if (!strcmp(m->name, "__name__"))
				continue;
			size_t j = 0;
			while (j < n && strcmp(tmp[j].name, m->name))
				j++;
			int seen_before = 0;
			for (size_t k = 0; k < i; k++)
				seen_before |= !strcmp(sel->matchers[k].name, m->name) && sel->matchers[k].type == TS_MATCH_EQ;
			if (j < n) /* a second matcher for a label removes it */
				tmp[j] = tmp[--n];
			else if (m->type == TS_MATCH_EQ && !seen_before)
				tmp[n++] = (cm_label){m->name, m->value};
		}
	}
	return ag__pls_make(c, tmp, n);
}

static int range_func(ag__pctx *c, const ag__pexpr *e, int64_t t, const ag__pval *args, ag__pval *out)
{
	int id = e->func->id, mi = id == F_QUANTILE_OT ? 1 : 0;
	const ag__pval *m = &args[mi];
	const ag__pexpr *sel = unparen(e->args[mi]);
	int64_t ref = ag__pctx_ref_time(c, sel, t);
	ag__psmp *v = ag__pctx_alloc(c, (m->n ? m->n : 1) * sizeof(*v));
	if (!v)
		return CM_ENOMEM;
	size_t k = 0;
	if (id == F_ABSENT_OT) {
		const ag__pls *ls = m->n ? NULL : absent_labels(c, sel);
		if (ls)
			v[k++] = (ag__psmp){ls, 1, t};
		*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
		return CM_OK;
	}
	if (id == F_HOLT_WINTERS && !(args[1].num > 0 && args[1].num < 1))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid smoothing factor. Expected: 0 < sf < 1, got: %f", args[1].num);
	if (id == F_HOLT_WINTERS && !(args[2].num > 0 && args[2].num < 1))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid trend factor. Expected: 0 < tf < 1, got: %f", args[2].num);
	for (size_t i = 0; i < m->n; i++) {
		double r;
		if (id == F_QUANTILE_OT) {
			double *vals = ag__pctx_alloc(c, m->m[i].n * sizeof(*vals));
			if (!vals)
				return CM_ENOMEM;
			for (size_t j = 0; j < m->m[i].n; j++)
				vals[j] = m->m[i].s[j].v;
			r = ag__pquantile(args[0].num, vals, m->m[i].n);
		} else if (!window_value(id, &m->m[i], ref, sel->range, e->nargs > 1 ? args[1].num : 0,
					 e->nargs > 2 ? args[2].num : 0, t, &r)) {
			continue;
		}
		const ag__pls *ls = id == F_LAST_OT ? m->m[i].ls : ag__pls_drop_name(c, m->m[i].ls);
		if (!ls)
			return CM_ENOMEM;
		v[k++] = (ag__psmp){ls, r, t};
	}
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
	return ag__pvec_unique(c, out);
}

/* ---- instant-vector functions ------------------------------------------------------------------- */

static double date_part(int id, double v)
{
	if (!isfinite(v) || fabs(v) > 1e15)
		return NAN;
	time_t secs = (time_t)v;
	struct tm tm;
	if (!gmtime_r(&secs, &tm))
		return NAN;
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y = tm.tm_year + 1900, leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	switch (id) {
	case F_MINUTE: return tm.tm_min;
	case F_HOUR: return tm.tm_hour;
	case F_DAY_OF_MONTH: return tm.tm_mday;
	case F_DAY_OF_WEEK: return tm.tm_wday;
	case F_DAY_OF_YEAR: return tm.tm_yday + 1;
	case F_DAYS_IN_MONTH: return mdays[tm.tm_mon] + (tm.tm_mon == 1 && leap);
	case F_MONTH: return tm.tm_mon + 1;
	default: return y;
	}
}

static double math1(int id, double v, const ag__pval *args, size_t nargs)
{
	switch (id) {
	case F_ABS: return fabs(v);
	case F_CEIL: return ceil(v);
	case F_FLOOR: return floor(v);
	case F_ROUND: {
		double inv = 1.0 / (nargs > 1 ? args[1].num : 1.0);
		return floor(v * inv + 0.5) / inv;
	}
	case F_EXP: return exp(v);
	case F_LN: return log(v);
	case F_LOG2: return log2(v);
	case F_LOG10: return log10(v);
	case F_SQRT: return sqrt(v);
	case F_SGN: return v < 0 ? -1 : v > 0 ? 1 : v;
	case F_CLAMP: return ag__go_max(args[1].num, ag__go_min(args[2].num, v));
	case F_CLAMP_MIN: return ag__go_max(args[1].num, v);
	case F_CLAMP_MAX: return ag__go_min(args[1].num, v);
	case F_ACOS: return acos(v);
	case F_ACOSH: return acosh(v);
	case F_ASIN: return asin(v);
	case F_ASINH: return asinh(v);
	case F_ATAN: return atan(v);
	case F_ATANH: return atanh(v);
	case F_COS: return cos(v);
	case F_COSH: return cosh(v);
	case F_SIN: return sin(v);
	case F_SINH: return sinh(v);
	case F_TAN: return tan(v);
	case F_TANH: return tanh(v);
	case F_DEG: return v * 180 / M_PI;
	case F_RAD: return v * M_PI / 180;
	case F_TIMESTAMP: return NAN;
	default: return date_part(id, v);
	}
}

static int map_vector(ag__pctx *c, const ag__pexpr *e, int64_t t, const ag__pval *args, ag__pval *out)
{
	int id = e->func->id;
	ag__psmp now = {NULL, (double)t / 1000, t};
	const ag__psmp *in = e->nargs ? args[0].v : &now;
	size_t n = e->nargs ? args[0].n : 1;
	if (!e->nargs && !(now.ls = ag__pls_make(c, NULL, 0)))
		return CM_ENOMEM;
	if (id == F_CLAMP && args[2].num < args[1].num)
		n = 0;
	ag__psmp *v = ag__pctx_alloc(c, (n ? n : 1) * sizeof(*v));
	if (!v)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const ag__pls *ls = ag__pls_drop_name(c, in[i].ls);
		if (!ls)
			return CM_ENOMEM;
		double r = id == F_TIMESTAMP ? (double)in[i].t / 1000 : math1(id, in[i].v, args, e->nargs);
		v[i] = (ag__psmp){ls, r, t};
	}
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = n};
	return ag__pvec_unique(c, out);
}

/* Go's regexp.Expand for $1, ${1}, $name (named groups do not exist in POSIX ERE: empty) and $$. Group
 * numbers are shifted by one: the pattern was wrapped in a group of ours. */
static size_t expand(const char *tmpl, const char *src, const regmatch_t *m, size_t nm, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *p = tmpl; *p && o + 1 < cap;) {
		if (*p != '$') {
			out[o++] = *p++;
			continue;
		}
		const char *q = p + 1, *name = q;
		size_t len = 0;
		if (*q == '$') {
			out[o++] = '$', p += 2;
			continue;
		}
		if (*q == '{') {
			name = q + 1;
			const char *end = strchr(name, '}');
			len = end ? (size_t)(end - name) : 0;
			q = end ? end + 1 : q;
		} else {
			while (isalnum((unsigned char)q[len]) || q[len] == '_')
				len++;
			q += len;
		}
		if (!len) {
			out[o++] = *p++;
			continue;
		}
		size_t g = 0, digits = 1;
		for (size_t i = 0; i < len; i++)
			digits &= isdigit((unsigned char)name[i]) != 0, g = g * 10 + (size_t)(name[i] - '0');
		if (digits && len < 6 && (g == 0 || g + 1 < nm) && m[g ? g + 1 : 0].rm_so >= 0) {
			const regmatch_t *r = &m[g ? g + 1 : 0];
			for (regoff_t i = r->rm_so; i < r->rm_eo && o + 1 < cap; i++)
				out[o++] = src[i];
		}
		p = q;
	}
	out[o] = 0;
	return o;
}

static int set_label(ag__pctx *c, const ag__pls *ls, const char *name, const char *value, const ag__pls **out)
{
	cm_label tmp[257];
	size_t n = 0;
	for (size_t i = 0; i < ls->n && n < 256; i++)
		if (strcmp(ls->l[i].name, name))
			tmp[n++] = ls->l[i];
	if (*value)
		tmp[n++] = (cm_label){name, value};
	*out = ag__pls_make(c, tmp, n);
	return *out ? CM_OK : CM_ENOMEM;
}

static int compile_replace_re(ag__pctx *c, const char *re, regex_t *out)
{
	cm_err err;
	const char *posix;
	if (!cm_regex_safe(re))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid regular expression in label_replace(): \"%.80s\" is "
				     "too long or may blow up", re);
	if (ag__re2_translate(re, ag__pctx_arena(c), &posix, &err))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid regular expression in label_replace(): %s", err.msg);
	size_t len = strlen(posix) + 8;
	char *pat = ag__pctx_alloc(c, len);
	if (!pat)
		return CM_ENOMEM;
	snprintf(pat, len, "^(%s)$", posix);
	if (regcomp(out, pat, REG_EXTENDED))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid regular expression in label_replace(): \"%.80s\"", re);
	return CM_OK;
}

static int label_replace(ag__pctx *c, const ag__pval *args, int64_t t, ag__pval *out)
{
	const char *dst = args[1].str, *repl = args[2].str, *src = args[3].str;
	regex_t re;
	regmatch_t m[20];
	if (!cm_label_name_valid(dst))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid destination label name in label_replace(): %s", dst);
	int rc = compile_replace_re(c, args[4].str, &re);
	if (rc)
		return rc;
	const ag__pval *in = &args[0];
	ag__psmp *v = ag__pctx_alloc(c, (in->n ? in->n : 1) * sizeof(*v));
	char *buf = ag__pctx_alloc(c, 65536);
	for (size_t i = 0; v && buf && i < in->n && !rc; i++) {
		const char *sv = ag__pls_get(in->v[i].ls, src);
		v[i] = (ag__psmp){in->v[i].ls, in->v[i].v, t};
		if (regexec(&re, sv ? sv : "", 20, m, 0))
			continue;
		expand(repl, sv ? sv : "", m, 20, buf, 65536);
		rc = set_label(c, in->v[i].ls, dst, buf, &v[i].ls);
	}
	regfree(&re);
	if (!v || !buf)
		return CM_ENOMEM;
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = in->n};
	return rc ? rc : ag__pvec_unique(c, out);
}

static int label_join(ag__pctx *c, const ag__pexpr *e, const ag__pval *args, int64_t t, ag__pval *out)
{
	const char *dst = args[1].str, *sep = args[2].str;
	if (!cm_label_name_valid(dst))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid destination label name in label_join(): %s", dst);
	for (size_t j = 3; j < e->nargs; j++)
		if (!cm_label_name_valid(args[j].str))
			return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid source label name in label_join(): %s", args[j].str);
	const ag__pval *in = &args[0];
	ag__psmp *v = ag__pctx_alloc(c, (in->n ? in->n : 1) * sizeof(*v));
	cm_buf b;
	cm_buf_init(&b);
	int rc = v ? CM_OK : CM_ENOMEM;
	for (size_t i = 0; i < in->n && !rc; i++) {
		b.len = 0;
		for (size_t j = 3; j < e->nargs && !rc; j++) {
			const char *sv = ag__pls_get(in->v[i].ls, args[j].str);
			rc = cm_buf_puts(&b, j > 3 ? sep : "");
			rc = rc ? rc : cm_buf_puts(&b, sv ? sv : "");
		}
		rc = rc ? rc : cm_buf_append(&b, "", 1);
		v[i] = (ag__psmp){in->v[i].ls, in->v[i].v, t};
		rc = rc ? rc : set_label(c, in->v[i].ls, dst, (const char *)b.data, &v[i].ls);
	}
	cm_buf_close(&b);
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = in->n};
	return rc ? rc : ag__pvec_unique(c, out);
}

/* ---- histogram_quantile ------------------------------------------------------------------------- */

typedef struct bucket {
	double ub, count;
} bucket;

static int cmp_bucket(const void *a, const void *b)
{
	double x = ((const bucket *)a)->ub, y = ((const bucket *)b)->ub;
	return (x > y) - (x < y);
}

static double bucket_quantile(double q, bucket *b, size_t n)
{
	if (isnan(q))
		return NAN;
	if (q < 0)
		return -INFINITY;
	if (q > 1)
		return INFINITY;
	qsort(b, n, sizeof(*b), cmp_bucket);
	if (!(isinf(b[n - 1].ub) && b[n - 1].ub > 0))
		return NAN;
	size_t k = 0; /* coalesce equal bounds */
	for (size_t i = 0; i < n; i++) {
		if (k && b[k - 1].ub == b[i].ub)
			b[k - 1].count += b[i].count;
		else
			b[k++] = b[i];
	}
	n = k;
	double max = -INFINITY;
	for (size_t i = 0; i < n; i++) {
		if (b[i].count > max)
			max = b[i].count;
		else if (b[i].count < max)
			b[i].count = max;
	}
	if (n < 2)
		return NAN;
	double obs = b[n - 1].count;
	if (obs == 0)
		return NAN;
	double rank = q * obs;
	size_t i = 0;
	while (i < n - 1 && !(b[i].count >= rank))
		i++;
	if (i == n - 1)
		return b[n - 2].ub;
	if (i == 0 && b[0].ub <= 0)
		return b[0].ub;
	double start = 0, end = b[i].ub, count = b[i].count;
	if (i > 0) {
		start = b[i - 1].ub;
		count -= b[i - 1].count;
		rank -= b[i - 1].count;
	}
	return start + (end - start) * (rank / count);
}

/* Go's strconv.ParseFloat: the whole string must be a number (Inf, NaN spelled any case). */
static int parse_le(const char *s, double *out)
{
	char *end;
	if (!s || !*s || isspace((unsigned char)*s))
		return 0;
	*out = strtod(s, &end);
	return *end == 0;
}

static int histogram_quantile(ag__pctx *c, const ag__pval *args, int64_t t, ag__pval *out)
{
	static const char *const le[] = {"le"};
	const ag__pval *in = &args[1];
	size_t n = in->n, ng = 0;
	const ag__pls **keys = ag__pctx_alloc(c, (n ? n : 1) * sizeof(*keys));
	size_t *gi = ag__pctx_alloc(c, (n ? n : 1) * sizeof(*gi));
	bucket *bk = ag__pctx_alloc(c, (n ? n : 1) * sizeof(*bk));
	ag__psmp *v = ag__pctx_alloc(c, (n ? n : 1) * sizeof(*v));
	if (!keys || !gi || !bk || !v)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		double ub;
		gi[i] = SIZE_MAX;
		if (!parse_le(ag__pls_get(in->v[i].ls, "le"), &ub))
			continue;
		const ag__pls *key = ag__pls_filter(c, in->v[i].ls, le, 1, 0, 0);
		if (!key)
			return CM_ENOMEM;
		size_t g = 0;
		while (g < ng && keys[g] != key)
			g++;
		if (g == ng)
			keys[ng++] = key;
		gi[i] = g;
		bk[i] = (bucket){ub, in->v[i].v};
	}
	bucket *tmp = ag__pctx_alloc(c, (n ? n : 1) * sizeof(*tmp));
	if (!tmp)
		return CM_ENOMEM;
	for (size_t g = 0; g < ng; g++) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++)
			if (gi[i] == g)
				tmp[k++] = bk[i];
		const ag__pls *ls = ag__pls_drop_name(c, keys[g]);
		if (!ls)
			return CM_ENOMEM;
		v[g] = (ag__psmp){ls, bucket_quantile(args[0].num, tmp, k), t};
	}
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = ng};
	return CM_OK;
}

/* ---- the rest ----------------------------------------------------------------------------------- */

static int cmp_asc(const void *a, const void *b)
{
	double x = ((const ag__psmp *)a)->v, y = ((const ag__psmp *)b)->v;
	if (isnan(x) || isnan(y))
		return isnan(x) - isnan(y);
	return (x > y) - (x < y);
}

static int cmp_desc(const void *a, const void *b)
{
	double x = ((const ag__psmp *)a)->v, y = ((const ag__psmp *)b)->v;
	if (isnan(x) || isnan(y))
		return isnan(x) - isnan(y);
	return (x < y) - (x > y);
}

static int vector_func(ag__pctx *c, const ag__pexpr *e, int64_t t, const ag__pval *args, ag__pval *out)
{
	int id = e->func->id;
	if (e->nargs && args[0].type == AG_PT_VECTOR) {
		*out = args[0];
		for (size_t i = 0; i < out->n; i++)
			out->v[i].t = t;
	}
	switch (id) {
	case F_SORT: qsort(out->v, out->n, sizeof(*out->v), cmp_asc); return CM_OK;
	case F_SORT_DESC: qsort(out->v, out->n, sizeof(*out->v), cmp_desc); return CM_OK;
	case F_LABEL_REPLACE: return label_replace(c, args, t, out);
	case F_LABEL_JOIN: return label_join(c, e, args, t, out);
	case F_HISTOGRAM_QUANTILE: return histogram_quantile(c, args, t, out);
	default: break;
	}
	ag__psmp *v = ag__pctx_alloc(c, sizeof(*v));
	const ag__pls *empty = ag__pls_make(c, NULL, 0);
	if (!v || !empty)
		return CM_ENOMEM;
	if (id == F_ABSENT) {
		const ag__pls *ls = args[0].n ? NULL : absent_labels(c, e->args[0]);
		v[0] = (ag__psmp){ls, 1, t};
		*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = ls != NULL};
		return CM_OK;
	}
	if (id == F_VECTOR) {
		v[0] = (ag__psmp){empty, args[0].num, t};
		*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = 1};
		return CM_OK;
	}
	double r = id == F_TIME ? (double)t / 1000 : id == F_PI ? M_PI : args[0].n == 1 ? args[0].v[0].v : NAN;
	*out = (ag__pval){.type = AG_PT_SCALAR, .num = r};
	return CM_OK;
}

int ag__pfunc_call(ag__pctx *c, const ag__pexpr *e, int64_t t, const ag__pval *args, ag__pval *out)
{
	int id = e->func->id;
	if (id <= F_ABSENT_OT)
		return range_func(c, e, t, args, out);
	if ((id >= F_ABS && id <= F_RAD) || id == F_TIMESTAMP || id >= F_MINUTE)
		return map_vector(c, e, t, args, out);
	return vector_func(c, e, t, args, out);
}
