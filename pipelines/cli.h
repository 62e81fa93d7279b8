/* Entry points of the oscar subcommands, one file each in pipelines/. Each parses its own
 * arguments (argv[0] is the first option, not the command name), prints its own help on
 * --help, and returns the process exit code: 0 ok, 1 runtime error, 2 usage error. */
#ifndef OSC_PIPELINES_CLI_H
#define OSC_PIPELINES_CLI_H

int osc_cli_bench(int argc, char **argv); /* bench.c */
int osc_cli_caption(int argc, char **argv); /* caption.c */
int osc_cli_kvstat(int argc, char **argv); /* kvstat.c */
int osc_cli_listen(int argc, char **argv); /* listen.c */
int osc_cli_ppl(int argc, char **argv);   /* ppl.c */
int osc_cli_vqa(int argc, char **argv);   /* vqa.c */

#endif
