"""How the ranks of a torch.distributed job divide the work: the degrees of each kind of parallelism, and their rules.

A job of `world_size` ranks is a grid `cfg x ring x ulysses` (cfg outermost, so the ranks of one context-parallel group
are neighbours, on the same node where possible). FSDP is orthogonal: it shards the weights over every rank.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelLayout:
    """The parallel degrees of a job.

    Args:
        ulysses_degree (`int`, defaults to 1): ranks that split the video tokens with Ulysses attention (an all-to-all
            turns the token split into a head split inside self-attention); must divide the number of heads.
        ring_degree (`int`, defaults to 1): ranks that split the video tokens with Ring attention (each rank attends
            to every rank's keys and values in turn, merged by their log-sum-exp).
        cfg_parallel (`bool`, defaults to False): the conditional and unconditional branches of classifier-free
            guidance on two different groups of ranks, gathered before the guidance formula.
        fsdp (`bool`, defaults to False): shard the DiT's and the text encoder's weights over all ranks (FSDP2), each
            block gathered just before it runs.
    """

    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_parallel: bool = False
    fsdp: bool = False

    def __post_init__(self):
        for name in ("ulysses_degree", "ring_degree"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")

    @property
    def cfg_degree(self) -> int:
        return 2 if self.cfg_parallel else 1

    @property
    def context_degree(self) -> int:
        """Ranks that share one video's tokens: `ulysses_degree * ring_degree`."""
        return self.ulysses_degree * self.ring_degree

    @property
    def degree(self) -> int:
        """Ranks the layout needs: `cfg x ring x ulysses`."""
        return self.cfg_degree * self.context_degree

    def check_world_size(self, world_size: int, names: dict[str, str] | None = None) -> None:
        """Raise a ValueError unless the layout fills `world_size` ranks exactly.

        With FSDP alone (all degrees 1) any world size is allowed: every rank then computes the whole step on sharded
        weights. `names` maps the argument names to how the caller spells them (e.g. `{"ulysses_degree": "--ulysses"}`).
        """
        names = {**_ARGUMENT_NAMES, **(names or {})}
        if self.degree == world_size or (self.fsdp and self.degree == 1):
            return
        raise ValueError(
            f"{names['cfg_parallel']} ({self.cfg_degree}) x {names['ring_degree']} ({self.ring_degree}) x "
            f"{names['ulysses_degree']} ({self.ulysses_degree}) = {self.degree} ranks, but the job has {world_size}: "
            f"make the product equal the number of processes (e.g. torchrun --nproc_per_node {self.degree}), or "
            f"change the degrees"
        )

    def check_model(self, num_heads: int, names: dict[str, str] | None = None) -> None:
        """Raise a ValueError unless Ulysses can split `num_heads` attention heads."""
        names = {**_ARGUMENT_NAMES, **(names or {})}
        if num_heads % self.ulysses_degree:
            divisors = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
            raise ValueError(
                f"{names['ulysses_degree']} must divide the model's {num_heads} attention heads (Ulysses gives each "
                f"rank whole heads), got {self.ulysses_degree}; use one of {divisors}, or --ring for the rest"
            )

    def check_tokens(self, num_tokens: int, what: str = "the video") -> None:
        """Raise a ValueError unless `num_tokens` video tokens split evenly over the context-parallel ranks."""
        if num_tokens % self.context_degree:
            raise ValueError(
                f"{what} has {num_tokens} tokens, which do not split over ring x ulysses = {self.context_degree} "
                f"ranks: choose a size or frame count whose token count is a multiple of {self.context_degree}, or "
                "smaller degrees"
            )


_ARGUMENT_NAMES = {
    "ulysses_degree": "`ulysses_degree`",
    "ring_degree": "`ring_degree`",
    "cfg_parallel": "`cfg_parallel`",
}
