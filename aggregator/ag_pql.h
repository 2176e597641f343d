/* ag_pql.h -- PromQL inside the aggregator: the syntax tree (ag_promql.c), the evaluator (ag_peval.c)
 * and its functions (ag_pfunc.c).
 *
 * ag_promql.c parses a query into a tree of ag__pexpr nodes allocated from the request's arena and
 * type-checks it the way Prometheus 2.42's parser does. ag__pql_exec evaluates a tree over an instant or
 * a range and writes the "data" object of the Prometheus API answer. Included from ag_int.h only.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef AG_PQL_H
#define AG_PQL_H

typedef enum ag__pkind {
	AG_P_NUM,    /* num */
	AG_P_STR,    /* str */
	AG_P_SEL,    /* sel, range (0 = instant vector), offset, at */
	AG_P_SUBQ,   /* lhs[range:step] offset, at */
	AG_P_CALL,   /* func(args) */
	AG_P_AGG,    /* op param? lhs, grouping labels */
	AG_P_BIN,    /* lhs op rhs, matching */
	AG_P_NEG,    /* -lhs */
	AG_P_PAREN,  /* (lhs) */
} ag__pkind;

typedef enum ag__ptype { AG_PT_SCALAR, AG_PT_VECTOR, AG_PT_MATRIX, AG_PT_STRING, AG_PT_NONE } ag__ptype;

enum { AG_AT_NONE, AG_AT_TIME, AG_AT_START, AG_AT_END };

/* Binary operators, lowest precedence first within the groups of ag_promql.c's table. */
typedef enum ag__pop {
	AG_OP_OR, AG_OP_AND, AG_OP_UNLESS,
	AG_OP_EQ, AG_OP_NE, AG_OP_GT, AG_OP_LT, AG_OP_GE, AG_OP_LE,
	AG_OP_ADD, AG_OP_SUB, AG_OP_MUL, AG_OP_DIV, AG_OP_MOD, AG_OP_ATAN2, AG_OP_POW,
} ag__pop;

/* Aggregation operators. */
typedef enum ag__paggop {
	AG_AGG_SUM, AG_AGG_AVG, AG_AGG_MIN, AG_AGG_MAX, AG_AGG_COUNT, AG_AGG_GROUP, AG_AGG_STDDEV,
	AG_AGG_STDVAR, AG_AGG_TOPK, AG_AGG_BOTTOMK, AG_AGG_QUANTILE, AG_AGG_COUNT_VALUES,
} ag__paggop;

/* Vector matching cardinality of a binary operation. */
enum { AG_CARD_ONE_ONE, AG_CARD_MANY_ONE, AG_CARD_ONE_MANY, AG_CARD_MANY_MANY };

typedef struct ag__pfunc {
	const char *name;
	ag__ptype args[6];  /* argument types; the last repeats when variadic */
	int nargs;          /* required */
	int maxargs;        /* -1 = unlimited */
	ag__ptype ret;
	int id;             /* ag_pfunc.c's AG_F_* */
} ag__pfunc;

typedef struct ag__pexpr ag__pexpr;
struct ag__pexpr {
	ag__pkind kind;
	ag__ptype type;           /* of the result */
	size_t pos;               /* 1-based character of the node's start in the query */
	double num;
	const char *str;
	ag__selector sel;
	int64_t range, offset, step;  /* ms; step 0 = default (subqueries) */
	int at;                   /* AG_AT_* */
	int64_t at_ms;
	const ag__pfunc *func;
	ag__pexpr **args;
	size_t nargs;
	int op;                   /* ag__pop or ag__paggop */
	ag__pexpr *lhs, *rhs, *param;
	int without, ret_bool, card, on;
	const char **labels;      /* grouping (AGG) or on/ignoring (BIN) labels */
	size_t nlabels;
	const char **include;     /* group_left/group_right labels */
	size_t ninclude;
	ag__pexpr *next_sel;      /* every SEL node of a query, for closing */
	void *state;              /* the evaluator's, for one execution */
};

typedef struct ag__pquery {
	ag__pexpr *root;
	ag__pexpr *sels;
} ag__pquery;

#define AG_PQL_MAX_LEN 65536   /* bytes of query text */
#define AG_PQL_MAX_DEPTH 200   /* nesting of parentheses, calls and operators */
#define AG_PQL_MAX_TIME (1LL << 62)          /* |timestamps| in ms, so time arithmetic cannot overflow */
#define AG_PQL_MAX_DURATION 9223372036854LL  /* ms: Go's time.Duration limit (292 years), as Prometheus */

/* Parses a whole PromQL expression into a tree allocated from a (matchers compiled). CM_EPROTO with
 * "parse error at char N: ..." or a type error in err. */
int ag__pql_parse(const char *q, cm_arena *a, ag__pquery *out, cm_err *err);
void ag__pql_close(ag__pquery *q);
const ag__pfunc *ag__pfunc_find(const char *name);
/* RE2 to POSIX ERE for the common cases (\d \D \w \W \s \S); CM_EPROTO for RE2-only syntax
 * regcomp would misread ((?i), (?:, \b, lazy quantifiers). *out is re or a copy in a. */
int ag__re2_translate(const char *re, cm_arena *a, const char **out, cm_err *err);
const char *ag__ptype_name(ag__ptype t);

/* ---- evaluation (ag_peval.c) --------------------------------------------------------------------- */

typedef struct ag__pql_opts {
	int64_t lookback_ms;     /* 5 min */
	int64_t timeout_ms;      /* 2 min */
	uint64_t max_samples;    /* 50,000,000 */
	int64_t subquery_step_ms; /* default subquery resolution: 1 min */
} ag__pql_opts;

/* Error kinds of ag__pql_exec, with the Prometheus errorType and HTTP status each maps to. */
enum { AG_PQL_BAD_DATA = 1, AG_PQL_EXECUTION, AG_PQL_TIMEOUT, AG_PQL_INTERNAL };

/* Evaluates q at start (instant: start == end, step ignored) or over [start, end] every step and writes
 * {"resultType":...,"result":...} to out. On failure returns a negative code, sets *kind (AG_PQL_*) and
 * err; out may hold a partial answer the caller discards. */
int ag__pql_exec(ts_db *db, ag__pquery *q, int64_t start, int64_t end, int64_t step, int instant,
		 const ag__pql_opts *o, cm_buf *out, int *kind, cm_err *err);

/* ---- evaluator internals shared by ag_peval.c and ag_pfunc.c ------------------------------------ */

/* An interned label set: sorted by name, one copy per distinct set per query, so pointer equality is
 * label-set equality and per-series facts can be memoized by pointer. */
typedef struct ag__pls {
	uint64_t hash;
	size_t n;
	const cm_label *l;
	const struct ag__pls *noname;  /* the same set without __name__, once computed */
	const void *memo_node;         /* the last aggregation that grouped this set, and its group */
	size_t memo_group;
	uint64_t stamp;                /* ag__pvec_unique's mark: seen in the current check */
	struct ag__pls *next;          /* intern table chain */
} ag__pls;

typedef struct ag__psmp {
	const ag__pls *ls;
	double v;
	int64_t t;  /* the sample's own time for selectors, else the evaluation time */
} ag__psmp;

/* One series' samples inside a range window: points into loaded or materialized data, never copied. */
typedef struct ag__pwin {
	const ag__pls *ls;
	const cm_sample *s;
	size_t n;
} ag__pwin;

typedef struct ag__pval {
	ag__ptype type;
	double num;
	const char *str;
	ag__psmp *v;   /* AG_PT_VECTOR */
	ag__pwin *m;   /* AG_PT_MATRIX */
	size_t n;
} ag__pval;

typedef struct ag__pctx ag__pctx;

/* Scratch memory for the current step (freed when the step ends). */
void *ag__pctx_alloc(ag__pctx *c, size_t n);
cm_arena *ag__pctx_arena(ag__pctx *c);
/* Records an evaluation error (AG_PQL_* kind) and returns CM_EINVAL. */
int ag__pctx_fail(ag__pctx *c, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Interns labels (sorted here; strings copied on first sight). NULL when out of memory. */
const ag__pls *ag__pls_make(ag__pctx *c, cm_label *l, size_t n);
/* The labels of ls listed in names (keep) or not listed (!keep), without __name__ if drop_name. */
const ag__pls *ag__pls_filter(ag__pctx *c, const ag__pls *ls, const char *const *names, size_t nn, int keep,
			      int drop_name);
const ag__pls *ag__pls_drop_name(ag__pctx *c, const ag__pls *ls);
const char *ag__pls_get(const ag__pls *ls, const char *name);
/* The end of a range argument's window at evaluation time t: its @ time or t, minus its offset. */
int64_t ag__pctx_ref_time(const ag__pctx *c, const ag__pexpr *sel, int64_t t);
/* "vector cannot contain metrics with the same labelset" when two samples of v share a label set. */
int ag__pvec_unique(ag__pctx *c, const ag__pval *v);
/* Streaming of range functions (ag_peval.c computes every step's value while the tsdb hands over a
 * series): whether call qualifies (a range function over a range selector, literal other arguments),
 * and its value over one window (0 when there is none). */
int ag__pfunc_streamable(const ag__pexpr *call);
int ag__pfunc_window(const ag__pexpr *call, const ag__pwin *w, int64_t ref, int64_t t, double *out);
/* rate (2) or increase (1), else 0; and extrapolatedRate's second half, given the window's increase
 * with counter resets already added (the streaming path tracks resets across windows). */
int ag__pfunc_counter_rate(const ag__pexpr *call);
/* What extrapolatedRate derives from a window's times alone, kept from one window to the next: windows
 * sliding at a multiple of the scrape interval all have the same (zero it before the first window). */
typedef struct ag__pxmemo {
	int64_t first, last, span; /* the window's start to its first sample, last sample to its end, between */
	size_t n;
	int valid;
	double to_start, to_end, sampled, avg, factor;
} ag__pxmemo;
double ag__pfunc_extrapolate(const ag__pwin *w, int64_t ref, int64_t range, int counter, int is_rate,
			     double result, ag__pxmemo *m);
/* Evaluates a function call whose arguments are evaluated at t. */
int ag__pfunc_call(ag__pctx *c, const ag__pexpr *e, int64_t t, const ag__pval *args, ag__pval *out);
/* Prometheus' quantile over values (sorted in place), shared by quantile and quantile_over_time. */
double ag__pquantile(double q, double *v, size_t n);
double ag__go_max(double a, double b);
double ag__go_min(double a, double b);

#endif
