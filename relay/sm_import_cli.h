/* sm_import_cli: the command `krelay import-sendmail` (sm_import_cli.c). */
#ifndef KRELAY_SM_IMPORT_CLI_H
#define KRELAY_SM_IMPORT_CLI_H

int sm_import_cli(int argc, char **argv);

#endif
