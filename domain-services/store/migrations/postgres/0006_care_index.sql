-- "Does this provider treat this patient?" is asked on every health-record read and write.
-- Through hc_appointments_provider it walked every appointment of the provider (thousands for
-- a busy one) and looked each row up; this index answers it with one covering probe.
CREATE INDEX hc_appointments_care ON hc_appointments(patient_id, provider_id, status);
