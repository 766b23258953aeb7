"""Training to a wall-clock budget (`time_budget`, minutes): how many epochs fit, decided while the run goes.

`epochs` is only the first guess. After every epoch the planner takes what has been measured -- seconds per training
epoch (the first one left out once there are others: it pays for start-up and caching) and seconds per evaluation
(a quarter of an epoch until the first one is measured) -- and chooses the largest total number of epochs whose
remaining epochs and evaluations, the final one included, still end inside the budget:

    done + n epochs, n the largest with  n * train_s + evals(done, n) * eval_s  <=  budget_s - elapsed_s

where evals(done, n) counts the evaluations those epochs make (every val_interval-th and the last). The lr schedule
reads `epochs` at every step, so warmup and cosine decay stretch or shrink to the plan, and the last epoch always
ends at final_lr_ratio with an evaluation. Measured time counts from the first epoch, so the budget covers
training and evaluation, not dataset generation or caching before it.
"""
import time

UNMEASURED_EVAL_FRACTION = 0.25  # an evaluation before the first is measured: this fraction of a training epoch


def now():
    return time.monotonic()


def evaluations(done, n, val_interval):
    """How many of epochs done+1 .. done+n evaluate: every val_interval-th, and the last one."""
    if n <= 0:
        return 0
    last = done + n
    return sum(1 for e in range(done + 1, last + 1) if e % val_interval == 0 or e == last)


def epochs_that_fit(done, remaining_s, train_s, eval_s, val_interval):
    """The total epoch count: done + the most further epochs that end within remaining_s (at least `done`)."""
    n = 0
    while (n + 1) * train_s + evaluations(done, n + 1, val_interval) * eval_s <= remaining_s:
        n += 1
    return done + n


class TimeBudget:
    """Measures epochs and evaluations (epoch_started / epoch_trained / evaluated) and plans the epoch count."""

    def __init__(self, minutes, elapsed_s=0.0):
        self.budget_s = minutes * 60.0
        self.start = now() - elapsed_s  # a resumed run continues the clock of the checkpoint
        self.train_s, self.eval_s = [], []
        self._mark = None

    def epoch_started(self):
        self._mark = now()

    def epoch_trained(self):
        self.train_s.append(now() - self._mark)
        self._mark = now()

    def evaluated(self):
        self.eval_s.append(now() - self._mark)

    def elapsed_s(self):
        return now() - self.start

    def plan(self, done, val_interval):
        """The total number of epochs to train, given `done` finished ones (their evaluation, if any, not yet run)."""
        measured = self.train_s[1:] or self.train_s
        train_s = sum(measured) / len(measured)
        eval_s = self.eval_s[-1] if self.eval_s else UNMEASURED_EVAL_FRACTION * train_s
        due_now = eval_s if done % val_interval == 0 else 0.0  # epoch `done`'s own evaluation has not run yet
        remaining_s = self.budget_s - self.elapsed_s() - due_now
        return epochs_that_fit(done, remaining_s, train_s, eval_s, val_interval), train_s, eval_s
