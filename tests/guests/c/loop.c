/*
 * loop.c - spin forever.
 *
 * Expects: never terminates by itself; the test checks that zvm's
 * instruction/fuel or wall-clock limit kills it (non-zero status / timeout
 * error), and that it does so promptly.  No output.  The counter is
 * volatile so the optimiser must keep the loop body (a side-effect-free
 * infinite loop could otherwise be folded into something else).
 */
volatile unsigned long long counter;

int main(void) {
    for (;;)
        counter++;
}
