// SPDX-License-Identifier: GPL-2.0
/*
 * Test module for klpgen's callers (consistency) analysis. A kthread runs passes of foo();
 * each pass calls bar() several times, sleeping between calls, and records whether it saw
 * only old results, only new results, or a mix. A livepatch that changes bar() alone can
 * switch the thread in the middle of a pass (mixed); one that also patches foo() (the
 * caller that loops over bar()) switches it only between passes.
 */
#include <linux/delay.h>
#include <linux/kthread.h>
#include <linux/module.h>

static struct task_struct *worker;

/* Result of the last complete pass: 1 only old, 2 only new, 3 mixed. */
static int last;
/* Passes that saw both old and new results, and all passes. */
static int mixed;
static int passes;
module_param(last, int, 0444);
module_param(mixed, int, 0444);
module_param(passes, int, 0444);

static noinline __attribute__((noipa)) int bar(void)
{
	return 1;
}

static noinline __attribute__((noipa)) int foo(void)
{
	int i, seen = 0;

	for (i = 0; i < 4; i++) {
		seen |= 1 << bar();
		msleep(20);
	}
	return seen;
}

static int worker_fn(void *data)
{
	while (!kthread_should_stop()) {
		int seen = foo();

		last = seen == 2 ? 1 : seen == 4 ? 2 : 3;
		if (last == 3)
			mixed++;
		passes++;
		msleep(50);
	}
	return 0;
}

static int __init klpgen_kthread_init(void)
{
	worker = kthread_run(worker_fn, NULL, "klpgen_kthread");
	return PTR_ERR_OR_ZERO(worker);
}

static void __exit klpgen_kthread_exit(void)
{
	kthread_stop(worker);
}

module_init(klpgen_kthread_init);
module_exit(klpgen_kthread_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("klpgen e2e: a kthread looping over a patched function");
