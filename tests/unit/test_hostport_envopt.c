/* test_hostport_envopt.c: the one address parser (base/hostport.h) and the one environment-option
 * reader (base/envopt.h) that every program uses: accepted forms, the port range (0 only where
 * allowed), one-line errors naming the flag or variable, the flag values. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "base/envopt.h"
#include "base/hostport.h"

static void ok(const char *s, int zero_ok, const char *host, int port, int v6) {
  taca_hostport hp;
  taca_error err = {{0}};
  ck_assert_msg(taca_hostport_parse("--listen", s, zero_ok, &hp, &err) == 0, "%s: %s", s, err.msg);
  ck_assert_str_eq(hp.host, host);
  ck_assert_int_eq(hp.port, port);
  ck_assert_int_eq(hp.ipv6, v6);
}

static void bad(const char *s, int zero_ok, const char *want) {
  taca_hostport hp;
  taca_error err = {{0}};
  ck_assert_msg(taca_hostport_parse("--listen", s, zero_ok, &hp, &err) == -1, "'%s' accepted", s);
  ck_assert_msg(strstr(err.msg, want) && !strncmp(err.msg, "--listen: ", 10) && !strchr(err.msg, '\n'),
                "'%s': '%s' lacks '%s'", s, err.msg, want);
}

START_TEST(test_hostport) {
  ok("127.0.0.1:50051", 0, "127.0.0.1", 50051, 0);
  ok("127.0.0.1:1", 0, "127.0.0.1", 1, 0);
  ok("127.0.0.1:65535", 0, "127.0.0.1", 65535, 0);
  ok("127.0.0.1:0", TACA_PORT_ZERO_OK, "127.0.0.1", 0, 0);
  ok("[::1]:9091", 0, "::1", 9091, 1);
  ok("localhost:7", 0, "localhost", 7, 0); /* parsed, never resolved here */
  bad("127.0.0.1:0", TACA_PORT_NONZERO, "out of range 1..65535");
  bad("127.0.0.1:65536", TACA_PORT_ZERO_OK, "out of range");
  bad("127.0.0.1:99999", TACA_PORT_ZERO_OK, "out of range");
  bad("127.0.0.1:184467440737095516150", TACA_PORT_ZERO_OK, "out of range"); /* no wrap-around */
  bad("127.0.0.1:-5", 0, "not a number");
  bad("127.0.0.1:+5", 0, "not a number");
  bad("127.0.0.1:5x", 0, "not a number");
  bad("127.0.0.1: 5", 0, "not a number");
  bad("127.0.0.1:", 0, "empty port");
  bad(":5", 0, "empty host");
  bad("127.0.0.1", 0, "no ':PORT'");
  bad("", 0, "no ':PORT'");
  bad("::1:5", 0, "brackets");
  bad("[::1:5", 0, "[IPV6]:PORT");
  bad("[::1]5", 0, "[IPV6]:PORT");
  bad("a b:5", 0, "not a host");
}
END_TEST

START_TEST(test_lists) {
  taca_error err = {{0}};
  ck_assert_int_eq(taca_hostport_check_list("--server", "127.0.0.1:1,127.0.0.1:2,[::1]:3", &err), 0);
  ck_assert_int_eq(taca_hostport_check_list("--server", "127.0.0.1:1,,127.0.0.1:2", &err), -1);
  ck_assert_ptr_nonnull(strstr(err.msg, "--server: empty entry"));
  ck_assert_int_eq(taca_hostport_check_list("--server", "127.0.0.1:1,", &err), -1);
  ck_assert_int_eq(taca_hostport_check_list("--server", "127.0.0.1:0", &err), -1); /* 0: listen only */
  ck_assert_int_eq(taca_hostport_check_list("--server", "", &err), -1);
  taca_hostport hp;
  char buf[64];
  ck_assert_int_eq(taca_hostport_parse("x", "[::1]:0", 1, &hp, NULL), 0);
  taca_hostport_format(&hp, 4321, buf, sizeof buf);
  ck_assert_str_eq(buf, "[::1]:4321");
}
END_TEST

START_TEST(test_envopt) {
  const struct option flag = {"dry-run", no_argument, 0, 1}, val = {"batch-size", required_argument, 0, 2},
                      help = {"help", no_argument, 0, 3};
  char var[64];
  const char *v = "unset";
  taca_error err = {{0}};
  taca_env_var_name("TACA_FEATURED_", "max-batch", var, sizeof var);
  ck_assert_str_eq(var, "TACA_FEATURED_MAX_BATCH");
  unsetenv("TACA_BATCH_SIZE");
  ck_assert_int_eq(taca_env_option("TACA_", &val, var, sizeof var, &v, &err), 0);
  setenv("TACA_BATCH_SIZE", "", 1); /* empty = unset */
  ck_assert_int_eq(taca_env_option("TACA_", &val, var, sizeof var, &v, &err), 0);
  setenv("TACA_BATCH_SIZE", "64", 1);
  ck_assert_int_eq(taca_env_option("TACA_", &val, var, sizeof var, &v, &err), 1);
  ck_assert_str_eq(v, "64");
  ck_assert_str_eq(var, "TACA_BATCH_SIZE");
  const char *on[] = {"1", "true", "yes"}, *off[] = {"0", "false", "no"}, *neither[] = {"2", "on", "TRUE", " 1"};
  for (int i = 0; i < 3; i++) {
    setenv("TACA_DRY_RUN", on[i], 1);
    ck_assert_int_eq(taca_env_option("TACA_", &flag, var, sizeof var, &v, &err), 1);
    ck_assert_ptr_null(v);
    setenv("TACA_DRY_RUN", off[i], 1);
    ck_assert_int_eq(taca_env_option("TACA_", &flag, var, sizeof var, &v, &err), 0);
  }
  for (int i = 0; i < 4; i++) {
    setenv("TACA_DRY_RUN", neither[i], 1);
    ck_assert_int_eq(taca_env_option("TACA_", &flag, var, sizeof var, &v, &err), -1);
    ck_assert_msg(strstr(err.msg, "TACA_DRY_RUN") && strstr(err.msg, "--dry-run"), "%s", err.msg);
  }
  setenv("TACA_HELP", "1", 1); /* --help never comes from the environment */
  ck_assert_int_eq(taca_env_option("TACA_", &help, var, sizeof var, &v, &err), 0);
  unsetenv("TACA_DRY_RUN");
  unsetenv("TACA_BATCH_SIZE");
  unsetenv("TACA_HELP");
}
END_TEST

int main(void) {
  Suite *s = suite_create("hostport_envopt");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_hostport);
  tcase_add_test(tc, test_lists);
  tcase_add_test(tc, test_envopt);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
