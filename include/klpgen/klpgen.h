/* SPDX-License-Identifier: GPL-2.0 */
/*
 * <klpgen/klpgen.h>: annotations for source patches that klpgen turns into livepatch
 * modules. `klpgen build` puts the directory holding `klpgen/` on the include path of the
 * kernel units it compiles, so a patch only adds
 *
 *	#include <klpgen/klpgen.h>
 *
 * to a file it changes. Nothing here generates code in the running kernel's image: each
 * macro leaves a record in a `.klpgen.*` section of the patched object, which klpgen reads
 * and acts on, and which never reaches the module.
 *
 *   KLPGEN_IGNORE_FUNCTION(fn)          a change to fn (and its .cold/.part pieces) is not
 *                                       carried; the running kernel keeps its fn
 *   KLPGEN_IGNORE_SECTION("name")       changes to what lives in section "name" (a trailing
 *                                       '*' matches a prefix) are neither carried nor refused
 *   KLPGEN_FORCE_FUNCTION(fn)           fn is replaced even if its code did not change (for
 *                                       instance a caller that loops over a changed function,
 *                                       so tasks switch only once they have left it)
 *   KLPGEN_PRE_PATCH_CALLBACK(fn)       int fn(struct klp_object *): runs before the object is
 *                                       patched; non-zero aborts loading the livepatch
 *   KLPGEN_POST_PATCH_CALLBACK(fn)      void fn(struct klp_object *): after the transition to
 *                                       the new code has completed
 *   KLPGEN_PRE_UNPATCH_CALLBACK(fn)     void fn(struct klp_object *): before the transition
 *                                       back to the old code starts
 *   KLPGEN_POST_UNPATCH_CALLBACK(fn)    void fn(struct klp_object *): after it has completed
 *   KLPGEN_SYSCALL_DEFINE0..6(...)      SYSCALL_DEFINEn as a livepatch can replace it: no
 *                                       error-injection or syscall-tracing records, and the
 *                                       body inlined into the traceable entry stub (x86-64)
 *   KLPGEN_STATE(id, version)           the livepatch changes system state `id` (non-zero) in
 *                                       variant `version`: an entry of klp_patch.states
 *   klpgen_get_state(id)                this livepatch's struct klp_state of `id` (to set its
 *                                       data in a callback); klp_get_prev_state(id) is the
 *                                       kernel's, for the one an earlier livepatch left
 *
 * Callbacks belong to the klp_object of the unit they are in (vmlinux, or the module the
 * unit is part of); at most one of each kind per object. The callback function is copied
 * into the livepatch module like a new function.
 *
 * Shadow variables need nothing from klpgen: klp_shadow_get(), klp_shadow_alloc(),
 * klp_shadow_get_or_alloc(), klp_shadow_free() and klp_shadow_free_all() are exported by the
 * livepatch core and are called from patched code like any exported function (this header
 * includes <linux/livepatch.h>, which declares them).
 *
 * The section names and record formats below are klpgen's interface with this header;
 * klpgen refuses a `.klpgen.*` section it does not know.
 */
#ifndef _KLPGEN_KLPGEN_H
#define _KLPGEN_KLPGEN_H

#ifdef __KERNEL__
#include <linux/livepatch.h>
#else
struct klp_object;
#endif

#define KLPGEN__PASTE(a, b) a##b
#define KLPGEN__JOIN(a, b) KLPGEN__PASTE(a, b)
/* A file-scope name no other use of these macros in the unit has. */
#define KLPGEN__NAME(stem) KLPGEN__JOIN(stem, __COUNTER__)

/*
 * Ignore records are NUL-terminated names, one after the other, in a section of their own.
 * aligned(1) keeps the compiler from padding the arrays (klpgen skips empty strings anyway).
 * The static assertion makes a misspelt function name a compile error without taking the
 * function's address (which could change the code generated for it).
 */
#define KLPGEN_IGNORE_FUNCTION(fn)						\
	_Static_assert(sizeof(&(fn)) != 0, "KLPGEN_IGNORE_FUNCTION(" #fn ")");	\
	static const char __klpgen_ignore_function_##fn[]			\
	__attribute__((__used__, __aligned__(1),				\
		       __section__(".klpgen.ignore.functions"))) = #fn

#define KLPGEN_FORCE_FUNCTION(fn)						\
	_Static_assert(sizeof(&(fn)) != 0, "KLPGEN_FORCE_FUNCTION(" #fn ")");	\
	static const char __klpgen_force_function_##fn[]			\
	__attribute__((__used__, __aligned__(1),				\
		       __section__(".klpgen.force.functions"))) = #fn

#define KLPGEN_IGNORE_SECTION(name)						\
	static const char KLPGEN__NAME(__klpgen_ignore_section_)[]		\
	__attribute__((__used__, __aligned__(1),				\
		       __section__(".klpgen.ignore.sections"))) = name

/*
 * Callback records are one pointer each, in a section per kind; the pointer's type checks
 * the callback's signature against struct klp_callbacks.
 */
#define KLPGEN__CALLBACK(kind, ret, fn)						\
	static ret (*const __klpgen_##kind##_callback_##fn)(struct klp_object *) \
	__attribute__((__used__, __section__(".klpgen.callbacks." #kind))) = (fn)

#define KLPGEN_PRE_PATCH_CALLBACK(fn) KLPGEN__CALLBACK(pre_patch, int, fn)
#define KLPGEN_POST_PATCH_CALLBACK(fn) KLPGEN__CALLBACK(post_patch, void, fn)
#define KLPGEN_PRE_UNPATCH_CALLBACK(fn) KLPGEN__CALLBACK(pre_unpatch, void, fn)
#define KLPGEN_POST_UNPATCH_CALLBACK(fn) KLPGEN__CALLBACK(post_unpatch, void, fn)

/*
 * System states (struct klp_state, Linux 5.5 and later). A state stands for a change the
 * livepatch makes to the running system beyond its code (a setting it changes, shadow
 * variables it attaches), so that a later, cumulative livepatch can take it over: both hooks
 * list every KLPGEN_STATE of the patch in klp_patch.states, and the livepatch core refuses a
 * replacing livepatch that lacks one of the states of the livepatches it replaces, or has it
 * at a lower version. In the callbacks of the new livepatch, klp_get_prev_state(id) is the
 * state the installed livepatch left (its `data` included); klpgen_get_state(id) is this
 * livepatch's own, whose `data` is the patch's to set.
 *
 * The record is the two numbers, 64 bits each; klpgen refuses an id of 0 (it would end the
 * array), a version that is no unsigned int, and one id declared with two versions. The same
 * declaration in several files (a header) is one state.
 */
#define KLPGEN_STATE(id, version)						\
	_Static_assert((unsigned long long)(id) != 0,				\
		       "KLPGEN_STATE(" #id ", " #version "): the id must not be 0"); \
	_Static_assert((unsigned long long)(version) <= 0xffffffffULL,		\
		       "KLPGEN_STATE(" #id ", " #version "): the version is an unsigned int"); \
	static const unsigned long long KLPGEN__NAME(__klpgen_state_)[2]	\
	__attribute__((__used__, __aligned__(8),				\
		       __section__(".klpgen.states"))) = { (id), (version) }

#ifdef __KERNEL__
/*
 * The livepatch's struct klp_patch, defined by klpgen's hook (a reference from the patch's
 * code resolves inside the livepatch module). A macro, so that including this header does not
 * need a kernel with klp_get_state().
 */
extern struct klp_patch *const __klpgen_patch;
#define klpgen_get_state(id) klp_get_state(__klpgen_patch, (id))

/*
 * Syscall definitions. On x86-64 (v4.17 and later) SYSCALL_DEFINEn(name, ...) produces
 *   __x64_sys_name(const struct pt_regs *)   the entry the syscall table calls, which
 *                                             decodes the registers and calls
 *   __se_sys_name(long, ...)                  the sign-extending wrapper, which calls
 *   __do_sys_name(typed args)                 the body written after the macro,
 * (and __ia32_sys_name with CONFIG_IA32_EMULATION), plus, depending on the configuration, an
 * `_error_injection_whitelist` entry for each stub (CONFIG_FUNCTION_ERROR_INJECTION) and
 * syscall tracing metadata (CONFIG_FTRACE_SYSCALLS). Two things stop a livepatch there:
 *  - the records point at the running kernel's functions and cannot be carried (klpgen
 *    refuses a changed function on the error-injection list);
 *  - __do_sys_name is `static inline`, and the kernel's `inline` implies notrace: when GCC
 *    keeps it out of line (a body of any size), the changed function is one without an
 *    ftrace entry, which livepatch cannot redirect. (klpgen then replaces its only callers,
 *    the stubs, which call the carried new body; but with error injection the stubs are on
 *    the list above, and the stubs tail-call the body.)
 * KLPGEN_SYSCALL_DEFINEn produces the same entry points, under the same names, without the
 * records, and with __se_sys_name and __do_sys_name always inlined: the whole body is in the
 * stub, an ordinary traceable global function, which is what the livepatch replaces. (The
 * running kernel's out-of-line __do_sys_name is then only reached from the old stub.) For
 * SYSCALL_DEFINE0, whose stub is an alias of __do_sys_name, the stub likewise becomes a
 * function with the body inlined.
 *
 * The register-decoding helpers (SC_X86_64_REGS_TO_ARGS, SC_IA32_REGS_TO_ARGS) and the
 * argument mappers (__MAP, __SC_*) are the kernel's own, from <linux/syscalls.h>, which a
 * file defining syscalls includes already. They are looked up where the macro is used.
 */
#if defined(CONFIG_X86_64)

#define KLPGEN__SYS_STUB(abi, name, ...)					\
	long __##abi##_##name(const struct pt_regs *regs);			\
	long __##abi##_##name(const struct pt_regs *regs)			\
	{									\
		return __se_##name(__VA_ARGS__);				\
	}

#define KLPGEN__SYS_STUB0(abi, sname)						\
	long __##abi##_sys_##sname(const struct pt_regs *regs);			\
	long __##abi##_sys_##sname(const struct pt_regs *regs)			\
	{									\
		return __do_sys_##sname(regs);					\
	}

/* The wrappers' bodies go into the stubs (see above). */
#define KLPGEN__BODY static inline __attribute__((__always_inline__)) long

#ifdef CONFIG_IA32_EMULATION
#define KLPGEN__IA32_STUB(x, name, ...)						\
	KLPGEN__SYS_STUB(ia32, sys##name, SC_IA32_REGS_TO_ARGS(x, __VA_ARGS__))
#define KLPGEN__IA32_STUB0(sname) KLPGEN__SYS_STUB0(ia32, sname)
#else
#define KLPGEN__IA32_STUB(x, name, ...)
#define KLPGEN__IA32_STUB0(sname)
#endif

#define KLPGEN_SYSCALL_DEFINEx(x, name, ...)					\
	KLPGEN__BODY __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));		\
	KLPGEN__BODY __do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__));		\
	KLPGEN__SYS_STUB(x64, sys##name, SC_X86_64_REGS_TO_ARGS(x, __VA_ARGS__)) \
	KLPGEN__IA32_STUB(x, name, __VA_ARGS__)					\
	KLPGEN__BODY __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))		\
	{									\
		long ret = __do_sys##name(__MAP(x, __SC_CAST, __VA_ARGS__));	\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		__PROTECT(x, ret, __MAP(x, __SC_ARGS, __VA_ARGS__));		\
		return ret;							\
	}									\
	KLPGEN__BODY __do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#define KLPGEN_SYSCALL_DEFINE0(sname)						\
	KLPGEN__BODY __do_sys_##sname(const struct pt_regs *__unused);		\
	KLPGEN__SYS_STUB0(x64, sname)						\
	KLPGEN__IA32_STUB0(sname)						\
	KLPGEN__BODY __do_sys_##sname(const struct pt_regs *__unused)

#else /* !CONFIG_X86_64 */

/* Fails where it is used, naming the problem; including the header stays harmless. */
#define KLPGEN_SYSCALL_DEFINEx(x, name, ...)					\
	_Static_assert(0, "KLPGEN_SYSCALL_DEFINE: only x86-64 is supported so far"); \
	static inline long __do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))
#define KLPGEN_SYSCALL_DEFINE0(sname)						\
	_Static_assert(0, "KLPGEN_SYSCALL_DEFINE: only x86-64 is supported so far"); \
	static long __do_sys_##sname(const struct pt_regs *__unused)

#endif /* CONFIG_X86_64 */

#define KLPGEN_SYSCALL_DEFINE1(name, ...) KLPGEN_SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KLPGEN_SYSCALL_DEFINE2(name, ...) KLPGEN_SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KLPGEN_SYSCALL_DEFINE3(name, ...) KLPGEN_SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KLPGEN_SYSCALL_DEFINE4(name, ...) KLPGEN_SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KLPGEN_SYSCALL_DEFINE5(name, ...) KLPGEN_SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KLPGEN_SYSCALL_DEFINE6(name, ...) KLPGEN_SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

#endif /* __KERNEL__ */

#endif /* _KLPGEN_KLPGEN_H */
