"""`PushToHub`: publish the best checkpoint as a Hub folder when `fit` ends."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback

from ds2hub.publish.push import export, local_details, push, summarize

log = logging.getLogger(__name__)


class PushToHub(L.Callback):
    """At the end of `fit`, publishes the best checkpoint like `ds2hub push` does.

    Args:
        repo_id: `user/name` on the Hugging Face Hub.
        output_dir: where to write the hub folder (default: `<log_dir>/hub`): a new or empty
            folder, or an earlier export's with `overwrite`; any other folder is left untouched.
        dry_run: write the folder only (no upload), e.g. on machines without a token.
        run_eval: evaluate for the model card (see `export`).
        private: create the repository as private.
        overwrite: replace an earlier export in `output_dir`.
        redact: replace local paths, the user and host name in recipe.yaml and the card; without
            it, the ones found are logged before the upload.
    """

    def __init__(
        self,
        repo_id: str,
        output_dir: str | None = None,
        dry_run: bool = False,
        run_eval: bool = True,
        private: bool = False,
        overwrite: bool = False,
        redact: bool = False,
    ) -> None:
        self.repo_id, self.output_dir, self.dry_run = repo_id, output_dir, dry_run
        self.run_eval, self.private = run_eval, private
        self.overwrite, self.redact = overwrite, redact

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        saver = trainer.checkpoint_callback
        if trainer.global_rank != 0 or saver is None:
            return
        checkpoint = saver.best_model_path or saver.last_model_path
        if not checkpoint:
            log.warning("PushToHub: no checkpoint was saved; nothing to publish")
            return
        log_dir = Path(trainer.log_dir or ".")
        config = next((cb for cb in trainer.callbacks if isinstance(cb, SaveConfigCallback)), None)
        recipe = None
        if config is not None:
            recipe = log_dir / "run_config.yaml"
            recipe.write_text(config.parser.dump(config.config, skip_none=False))
        out = Path(self.output_dir or log_dir / "hub")
        try:
            folder = export(
                checkpoint,
                out,
                self.repo_id,
                config=recipe,
                run_eval=self.run_eval,
                overwrite=self.overwrite,
                redact=self.redact,
            )
            log.info("PushToHub: wrote %s", folder)
            details = local_details(folder, self.repo_id)
            if details:
                log.warning(
                    "PushToHub: recipe.yaml and README.md publish these local details "
                    "(PushToHub(redact=True) replaces them):\n%s",
                    summarize(details),
                )
            if not self.dry_run:
                url = push(folder, self.repo_id, private=self.private or None)
                log.info("PushToHub: uploaded %s", url)
        except Exception as error:  # noqa: BLE001 - training succeeded; publishing can be retried
            log.error(
                "PushToHub failed (retry with `ds2hub push %s --repo-id %s`): %s",
                checkpoint,
                self.repo_id,
                error,
            )
