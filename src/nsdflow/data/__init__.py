"""The data stage: the Algonauts data root's layout (:mod:`.layout`), its readers (:mod:`.read`), the
validation of a subject (:mod:`.validate`) and the demo dataset (:mod:`.demo`); commands in
:mod:`.commands`."""
